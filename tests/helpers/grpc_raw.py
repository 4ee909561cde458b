"""One unary gRPC call written by hand over HTTP/2 (the h2 package), for what grpcio's client
cannot send: a message compressed by the test itself, any grpc-encoding, any compressed flag."""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def call(port: int, message: bytes, encoding: str | None = None, compressed: bool | None = None,
         path: str = TRACE_METHOD, timeout: float = 10.0) -> tuple[int, str]:
    """(grpc-status, grpc-message) of one call; the message is sent as given, in 16 KiB frames."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    try:
        connection.initiate_connection()
        connection.increment_flow_control_window(1 << 30)
        sock.sendall(connection.data_to_send())
        stream = connection.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
                   ("content-type", "application/grpc"), ("te", "trailers")]
        if encoding:
            headers.append(("grpc-encoding", encoding))
        connection.send_headers(stream, headers)
        flag = bool(encoding and encoding != "identity") if compressed is None else compressed
        body = struct.pack(">BI", int(flag), len(message)) + message
        sent = 0
        status: dict[str, str] = {}
        while sent < len(body) or not status:
            if sent < len(body) and connection.local_flow_control_window(stream) > 0:
                size = min(16384, len(body) - sent, connection.local_flow_control_window(stream))
                connection.send_data(stream, body[sent:sent + size], end_stream=sent + size == len(body))
                sent += size
                sock.sendall(connection.data_to_send())
                continue
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    status.update({key.decode(): value.decode() for key, value in event.headers
                                   if key in (b"grpc-status", b"grpc-message")})
                if isinstance(event, h2.events.StreamReset):
                    return -1, f"stream reset ({event.error_code})"
            sock.sendall(connection.data_to_send())
        return int(status.get("grpc-status", -1)), status.get("grpc-message", "")
    finally:
        sock.close()
