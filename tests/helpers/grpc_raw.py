"""One unary gRPC call written by hand over HTTP/2 (the h2 package), for what grpcio's client
cannot send: a message compressed by the test itself, any grpc-encoding, any compressed flag; and
raw frames no client sends (a header block that never ends)."""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import ContinuationFrame, HeadersFrame, SettingsFrame

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def call(port: int, message: bytes, encoding: str | None = None, compressed: bool | None = None,
         path: str = TRACE_METHOD, timeout: float = 10.0, content_type: str = "application/grpc",
         metadata: tuple[tuple[str, str | bytes], ...] = ()) -> tuple[int, str]:
    """(grpc-status, grpc-message) of one call; the message is sent as given, in 16 KiB frames, and
    `metadata` as headers after the required ones (a grpc-timeout the client itself never enforces)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    try:
        connection.initiate_connection()
        connection.increment_flow_control_window(1 << 30)
        sock.sendall(connection.data_to_send())
        stream = connection.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
                   ("content-type", content_type), ("te", "trailers"), *metadata]
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


def endless_header_block(sock: socket.socket, frames: int, size: int) -> None:
    """The preface, HEADERS without END_HEADERS, then `frames` CONTINUATION frames of `size` bytes
    that never end the block; stops quietly once the server has closed the connection."""
    headers = HeadersFrame(1)
    headers.data = b"\x00"
    try:
        sock.sendall(PREFACE + SettingsFrame(0).serialize() + headers.serialize())
        for _ in range(frames):
            continuation = ContinuationFrame(1)
            continuation.data = b"\x00" * size
            sock.sendall(continuation.serialize())
    except OSError:
        pass
