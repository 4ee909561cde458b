"""A misbehaving gRPC server for client tests: HTTP/2 written by hand (the h2 package) on asyncio,
in the test's own event loop, doing one thing wrong (or right) as its `mode` says.

Modes:
- "ok": answers every call OK with an empty response message.
- "goaway": waits until `calls` requests are in, sends GOAWAY naming only the first stream as
  processed, then answers that one; the others stay unanswered. Later connections get "ok".
- "drain": grpc-go's graceful GOAWAY (max_connection_age, a graceful stop): answers the first
  call and, in the same write, says GOAWAY naming every stream and PINGs; the client's PING ACK is
  counted in `ping_acks`. Later connections get "ok".
- "goaway_always": every connection, once `calls` requests are in, says GOAWAY naming none of them
  as processed (last_stream_id 0) and answers nothing.
- "refuse_first": resets the first call with REFUSED_STREAM (not taken), answers the others OK.
- "huge": answers OK with a message of `size` bytes.
- "gzip_response": answers OK with `response`, gzip-compressed (grpc-encoding gzip, flag set).
- "http_503": answers HTTP 503 with no gRPC status; "trailers_only": a trailers-only error with
  a percent-encoded grpc-message.
- "http_413": a proxy's body limit (nginx's client_max_body_size before a gRPC backend): a request
  whose message passes `size` bytes is answered HTTP 413 in HTML as the bytes pass it, with no
  gRPC status; smaller ones get "ok". `received` lists the message sizes answered OK.
- "early_answer": allows one stream at a time and answers each call UNAVAILABLE (trailers only)
  as soon as its headers arrive, before the request's body.
- "silent": accepts and never sends a byte; "silent_after_preface": sends its HTTP/2 preface,
  then never answers anything (not even PING).
- "http1": answers like an HTTP/1.1 server; "garbage": sends bytes that are not HTTP/2.
- "stalled": grants windows of 2 GiB, then stops reading (a link that died mid-request): the
  client's writes back up until its transport pauses writing. `abort_after` > 0: the connection
  is then reset after that many seconds.
"""

from __future__ import annotations

import asyncio
import gzip
import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

_OK_TRAILERS = [(b"grpc-status", b"0")]
_HEAD = [(b":status", b"200"), (b"content-type", b"application/grpc")]


class H2Peer:
    def __init__(self, mode: str, calls: int = 3, size: int = 8 << 20, response: bytes = b"", unix_path: str = "",
                 abort_after: float = 0.0):
        self.mode = mode
        self.abort_after = abort_after
        self.unix_path = unix_path  # listen on this unix socket instead of a loopback port
        self.response = response
        self.calls = calls
        self.size = size
        self.connections = 0
        self.requests = 0
        self.headers: list[dict[bytes, bytes]] = []  # of every request
        self.received: list[int] = []  # "http_413": the bytes of each request answered OK
        self.ping_acks = 0
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.Transport] = []

    async def __aenter__(self) -> H2Peer:
        loop = asyncio.get_running_loop()
        if self.unix_path:
            self._server = await loop.create_unix_server(lambda: _Peer(self), self.unix_path)
        else:
            self._server = await loop.create_server(lambda: _Peer(self), "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self._transports:
            transport.abort()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])


class _Peer(asyncio.Protocol):
    def __init__(self, owner: H2Peer):
        self.owner = owner
        owner.connections += 1
        self.mode = owner.mode if owner.connections == 1 or owner.mode not in ("goaway", "drain") else "ok"
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.complete: list[int] = []
        self.silent = False
        self.pending: dict[int, tuple[bytes, int]] = {}  # stream -> (data, sent)
        self.sizes: dict[int, int] = {}  # stream -> bytes of its request so far; -1 once refused ("http_413")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner._transports.append(transport)
        if self.mode == "silent":
            self.silent = True
        elif self.mode == "garbage":
            transport.write(bytes(range(256)) * 4)
        elif self.mode != "http1":
            if self.mode == "early_answer":
                self.h2.local_settings.max_concurrent_streams = 1
            if self.mode == "stalled":  # (a value set on local_settings waits for an ACK: it is not sent)
                self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
            self.h2.initiate_connection()
            if self.mode == "stalled":
                self.h2.increment_flow_control_window((1 << 31) - 1 - self.h2.inbound_flow_control_window)
            transport.write(self.h2.data_to_send())
            self.silent = self.mode == "silent_after_preface"
            if self.mode == "stalled":
                # once the transport reads: on older 3.11 releases (Debian's 3.11.2) a pause_reading()
                # in connection_made is undone by the reader the transport adds right after it
                asyncio.get_running_loop().call_soon(transport.pause_reading)
                if self.owner.abort_after > 0:
                    asyncio.get_running_loop().call_later(self.owner.abort_after, transport.abort)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.silent:
            return
        if self.mode == "http1":
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
                                 b"Bad Request")
            self.transport.close()
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.owner.headers.append({bytes(key): bytes(value) for key, value in event.headers})
                if self.mode == "early_answer":
                    self.h2.send_headers(event.stream_id, _HEAD + [(b"grpc-status", b"14")], end_stream=True)
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if self.mode == "http_413" and self.sizes.get(event.stream_id, 0) >= 0:
                    self.sizes[event.stream_id] = self.sizes.get(event.stream_id, 0) + len(event.data)
                    if self.sizes[event.stream_id] > self.owner.size + 5:  # the message and its prefix
                        self.sizes[event.stream_id] = -1
                        self.h2.send_headers(event.stream_id, [(b":status", b"413"), (b"content-type", b"text/html")])
                        self.h2.send_data(event.stream_id, b"<html><center><h1>413 Request Entity Too Large</h1>"
                                                           b"</center></html>", end_stream=True)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id in list(self.pending):
                    self._send(stream_id)
            elif isinstance(event, h2.events.PingAckReceived):
                self.owner.ping_acks += 1
            elif isinstance(event, h2.events.StreamEnded):
                self.owner.requests += 1
                self.complete.append(event.stream_id)
                self._answer(event.stream_id)
        self.transport.write(self.h2.data_to_send())

    def _answer(self, stream_id: int) -> None:
        if self.mode == "ok":
            self._respond(stream_id, b"")
        elif self.mode == "http_413":
            if self.sizes.get(stream_id, 0) >= 0:
                self.owner.received.append(self.sizes.get(stream_id, 0) - 5)
                self._respond(stream_id, b"")
        elif self.mode == "goaway" and len(self.complete) == self.owner.calls:
            first = min(self.complete)
            self.h2.close_connection(last_stream_id=first)
            self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN  # still answer `first`
            self._respond(first, b"")
        elif self.mode == "refuse_first":
            if self.owner.requests == 1:
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            else:
                self._respond(stream_id, b"")
        elif self.mode == "drain":
            self._respond(stream_id, b"")
            self.h2.close_connection(last_stream_id=(1 << 31) - 1)
            self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN  # still reads the ACK
            self.h2.ping(b"\x01\x06\x01\x08\x00\x03\x03\x09")  # grpc-go's goAwayPing
        elif self.mode == "goaway_always" and len(self.complete) == self.owner.calls:
            self.h2.close_connection(last_stream_id=0)
        elif self.mode == "gzip_response":
            self._respond(stream_id, gzip.compress(self.owner.response), compressed=True)
        elif self.mode == "huge":
            self._respond(stream_id, b"\x00" * self.owner.size)
        elif self.mode == "http_503":
            self.h2.send_headers(stream_id, [(b":status", b"503"), (b"content-type", b"text/plain")], end_stream=True)
        elif self.mode == "trailers_only":
            self.h2.send_headers(stream_id, _HEAD + [(b"grpc-status", b"3"),
                                                     (b"grpc-message", b"bad span %E2%9C%93 100%25")], end_stream=True)

    def _respond(self, stream_id: int, message: bytes, compressed: bool = False) -> None:
        self.h2.send_headers(stream_id, _HEAD + ([(b"grpc-encoding", b"gzip")] if compressed else []))
        self.pending[stream_id] = (struct.pack(">BI", int(compressed), len(message)) + message, 0)
        self._send(stream_id)

    def _send(self, stream_id: int) -> None:
        """As much as the client's windows allow; the rest when they open."""
        data, sent = self.pending.pop(stream_id)
        try:
            while sent < len(data):
                size = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size,
                           len(data) - sent)
                if size <= 0:
                    self.pending[stream_id] = (data, sent)
                    return
                self.h2.send_data(stream_id, data[sent:sent + size])
                sent += size
            self.h2.send_headers(stream_id, _OK_TRAILERS, end_stream=True)
        except h2.exceptions.StreamClosedError:
            pass  # the client reset it
