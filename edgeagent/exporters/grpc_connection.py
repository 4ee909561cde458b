"""One HTTP/2 connection of the gRPC client (grpc_client.py) to a server, on h2: its calls are
the connection's streams. Here too what every part of the client shares: `ChannelSettings`, which
a channel and each of its connections follow, and `GrpcStatusError`, how a call fails.

Design note (the channel's, which picks and opens connections, is grpc_client.py's):
- A connection is usable once the server's HTTP/2 preface (SETTINGS) has arrived, as in
  grpc-go; a peer that answers anything else (HTTP/1.1, garbage) fails the connection, and its
  calls end UNAVAILABLE with what the peer sent. A lost connection and a missed keepalive ping
  end UNAVAILABLE too. A GOAWAY takes no new call: the calls it names as not processed (above
  its last_stream_id), and those the server refuses with REFUSED_STREAM, end UNAVAILABLE marked
  `unprocessed` (the channel sends them once more, as grpc-go does); the others finish on the
  old connection, which goes on reading (a PING after a GOAWAY is answered: grpc-go's server
  waits for it to send its final GOAWAY); new calls open a new connection. Nothing else is
  retried here: the export chain does that, with its backoff.
- Flow control: request DATA goes out as the peer's windows allow; response DATA is
  acknowledged as it arrives, and a response is held only up to `max_receive_bytes` (more ends
  the call RESOURCE_EXHAUSTED, as grpc-go's max receive size).
- Keepalive as grpc-go's client: after `keepalive_time` without a byte from the server (and a
  call open, or `keepalive_without_calls`) send a PING; nothing back within
  `keepalive_timeout` means the connection is dead: it is closed and its calls end UNAVAILABLE.
  Quiet that long with no call open, keepalive sleeps until the next call, which pings at once.
  A server that ends the connection with GOAWAY ENHANCE_YOUR_CALM "too_many_pings" makes the
  channel ping half as often from then on (grpc-go doubles its keepalive time too).
- A call given up (its deadline passed, or it was cancelled) without a byte from the server
  since it was sent makes the connection suspect: a path that went silent (a NAT mapping lost, a
  modem that attached again with a new address) drops packets without a FIN or a reset, and
  every call on it would time out until keepalive (or the kernel, without it) gave up. A PING is
  sent at once; nothing back within as long as the call waited (at least 1 s, at most
  `keepalive_timeout`) ends the connection as a missed keepalive does, its calls UNAVAILABLE,
  and new calls open a new one. A slow server that is alive acknowledges the PING and keeps its
  connection. grpc-go keeps the connection after a deadline and only keepalive finds the
  silence: with otelcol's defaults (10 s, 10 s, no pings without calls) that takes 20 s and
  more, where here it takes the call's timeout twice.
- An answer's header fields are checked call by call as grpc-go's client checks them (x/net's
  framer, `invalid_fields`): a control character in a value, a name that is no lowercase token,
  a pseudo-header unknown, repeated, after a regular field or of a request ends that call
  INTERNAL and resets its stream (PROTOCOL_ERROR), the calls beside it going on; whitespace
  around a value, connection-specific fields, a `te` or a pseudo-header in trailers are taken,
  and a `content-length` is not read, as grpc-go reads none. A header list over 64 KiB (grpc-go
  allows 16 MiB) ends that call INTERNAL too, its stream reset (FRAME_SIZE_ERROR), as grpc-go
  ends one over its limit, and so does a header block in the middle of an answer (after its
  head, without END_STREAM). h2's own checks, which ended the whole connection (and the retry met
  the same answer), are off.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
from h2.connection import ConnectionState
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame

from edgeagent.exporters.grpc_dial import size_buffers
from edgeagent.grpc_status import StatusCode, from_reset
from edgeagent.receivers.h2_limits import OVERSIZED, HeaderListBound, LengthBlindStream

PREFIX = struct.Struct(">BI")  # a message's compressed flag and length
_STREAM_WINDOW = 1 << 20
_CONNECTION_WINDOW = 8 << 20
_MAX_HEADER_LIST = 64 << 10  # an answer's header list, as HPACK counts it (grpc-go's client: 16 MiB)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # Go's httpguts: no control character but tab
_NOT_TOKEN = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")  # a header name is a lowercase token in HTTP/2
_REQUEST_PSEUDO = frozenset({b":method", b":path", b":scheme", b":authority", b":protocol"})
_SUSPECT_MIN = 1.0  # seconds a PING after a silent deadline is given at least


class GrpcStatusError(Exception):
    """A call ended with a status other than OK; `trailers` are its metadata (`-bin` values as bytes).
    `unanswered`: no connection could be made at all (refused, unreachable, timed out, unresolved);
    None when the call's deadline passed, connecting or waiting. `from_server`: the server sent it.
    `http_status`: the HTTP status of an answer without a gRPC status (a proxy's), 0 else.
    `unprocessed`: the server says it did not take the call (GOAWAY, REFUSED_STREAM): it may be sent again."""

    def __init__(self, code: StatusCode, message: str, trailers: Sequence[tuple[str, str | bytes]] = (),
                 unanswered: bool | None = False, from_server: bool = False, http_status: int = 0,
                 unprocessed: bool = False):
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.trailers = list(trailers)
        self.unanswered = unanswered
        self.from_server = from_server
        self.http_status = http_status
        self.unprocessed = unprocessed


@dataclass(frozen=True)
class ChannelSettings:
    host: str
    port: int
    unix_path: str = ""  # a unix socket to connect to instead of host:port ("\0name": the abstract namespace)
    ssl_context: ssl.SSLContext | None = None  # None: plaintext (h2c); it must offer ALPN "h2"
    server_hostname: str = ""  # the name the server's certificate must carry (SNI); default `host`
    authority: str = ""  # the :authority header; default host:port
    balancer: str = "pick_first"  # or "round_robin"
    keepalive_time: float = 0.0  # 0: no keepalive pings
    keepalive_timeout: float = 20.0
    keepalive_without_calls: bool = False
    max_receive_bytes: int = 4 << 20  # grpc's default max receive message size
    connect_timeout: float = 20.0  # TCP, TLS and the server's preface; a call's deadline bounds it too
    user_agent: str = "edgeagent"
    receive_buffer: int = 0  # the socket's SO_RCVBUF (read_buffer_size); 0: the system's
    send_buffer: int = 0  # the socket's SO_SNDBUF (write_buffer_size); 0: the system's
    proxy: str = ""  # the HTTP CONNECT proxy's URL (`grpc_dial.py`); "": straight to the target


@dataclass
class Call:
    stream_id: int
    limit: int
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    window: asyncio.Event = field(default_factory=asyncio.Event)
    http_status: int = 0
    headers: dict[str, bytes] = field(default_factory=dict)
    trailers: list[tuple[str, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    error: GrpcStatusError | None = None

    def finish(self, error: GrpcStatusError | None = None) -> None:
        if self.done.done():
            return
        self.error = error
        self.done.set_result(None)
        self.window.set()


class HeadersMidway(h2.events.Event):
    """A header block in the middle of an answer (after its head, without END_STREAM)."""

    def __init__(self, stream_id: int):
        self.stream_id = stream_id


class _H2Client(h2.connection.H2Connection):
    """h2 closes its state machine on GOAWAY, and then refuses the frames that follow: the answers
    to the calls at or below last_stream_id, and grpc-go's PING after its first GOAWAY (read with
    an answer in one buffer, it ended that answered call too). It stays open: the connection
    itself takes no new call after a GOAWAY (`Connection.closed`).
    Its streams read no content-length from an answer, as grpc-go's client reads none (h2 ended
    the connection when the DATA did not add up to it)."""

    def _begin_new_stream(self, stream_id: int, allowed_ids: h2.connection.AllowedStreamIDs) -> h2.stream.H2Stream:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = LengthBlindStream
        return stream

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        """A second HEADERS without END_STREAM (trailers that do not end the answer) is an error of
        its stream alone, as grpc-go's operateHeaders makes it; h2 ended the connection for it. The
        block is decoded before h2 refuses it, so the HPACK table stays in step."""
        stream = self.streams.get(frame.stream_id)
        midway = stream is not None and bool(stream.state_machine.headers_received) and "END_STREAM" not in frame.flags
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.ProtocolError:
            if not (midway and stream is not None and stream.state_machine.trailers_received):
                raise  # a block that did not decode, or another fault of the connection's
            return [], [HeadersMidway(frame.stream_id)]

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        state = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        if state == ConnectionState.CLIENT_OPEN:
            self.state_machine.state = state
        return frames, events


class Connection(asyncio.Protocol):
    """One HTTP/2 connection to a server; calls are its streams."""

    def __init__(self, settings: ChannelSettings, peer: str, too_many_pings: Callable[[], None] = lambda: None):
        self.settings = settings
        self._too_many_pings = too_many_pings
        self.peer = peer
        self.calls: dict[int, Call] = {}
        self.closed = False  # no new calls: GOAWAY, lost, dead, or drained for new certificates
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._h2 = _H2Client(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))  # checked call by call: _fields
        # a list over it: that call alone fails, whatever its count of fields (the upstream is no client)
        self._h2.decoder = HeaderListBound(_MAX_HEADER_LIST, count_fields=False)
        self._transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._slot = asyncio.Event()  # a stream ended: a waiting call may open one
        self._first_bytes = b""  # what the peer sent before its preface, for the error message
        self._last_read = self._loop.time()
        self._pinged_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._dormant = False  # keepalive sleeps: quiet long enough, and no call to ping for
        self._suspect: asyncio.TimerHandle | None = None  # a PING sent after a call's silent deadline

    # ---- transport -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        size_buffers(transport.get_extra_info("socket"), self.settings.receive_buffer, self.settings.send_buffer)
        self._h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST,
        })
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_CONNECTION_WINDOW - self._h2.inbound_flow_control_window)
        self._flush()
        if self.settings.keepalive_time > 0:
            self._timer = self._loop.call_later(self.settings.keepalive_time, self._keepalive)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"the connection to {self.peer} was lost" + (f": {exc}" if exc else "")
        if self._first_bytes and not self.ready.done():
            reason = f"{self.peer} does not speak HTTP/2 (gRPC); it answered {self._first_bytes!r}"
        self._fail(StatusCode.UNAVAILABLE, reason)
        self._transport = None

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        if not self.ready.done() and len(self._first_bytes) < 64:
            self._first_bytes += data[:64 - len(self._first_bytes)]
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._broken(exc)
            return
        for event in events:
            self._handle(event)
        self._flush()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _broken(self, exc: Exception) -> None:
        if self.ready.done():
            reason = f"HTTP/2 protocol error from {self.peer}: {exc}"
        else:
            reason = f"{self.peer} does not speak HTTP/2 (gRPC); it answered {self._first_bytes!r}"
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
            self._flush()
        self._fail(StatusCode.UNAVAILABLE, reason)

    def _fail(self, code: StatusCode, reason: str) -> None:
        """End the connection and every call on it."""
        self.closed = True
        for timer in (self._timer, self._suspect):
            if timer is not None:
                timer.cancel()
        if not self.ready.done():
            self.ready.set_exception(GrpcStatusError(code, reason))
            self.ready.exception()  # retrieved: nobody may be waiting for it any more
        for call in list(self.calls.values()):
            call.finish(GrpcStatusError(code, reason))
        self._slot.set()
        self._writable.set()  # a request waiting for the transport to resume writing: it never will
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._fail(StatusCode.CANCELLED, "the channel was closed")

    def drain(self) -> None:
        """No new calls; close once those in flight have ended."""
        self.closed = True
        if not self.calls and self._transport is not None:
            self._transport.close()

    # ---- keepalive -----------------------------------------------------------------------------

    def _keepalive(self) -> None:
        if self._transport is None:
            return
        settings, now = self.settings, self._loop.time()
        if self._pinged_at is not None:
            if self._last_read <= self._pinged_at:
                left = self._pinged_at + settings.keepalive_timeout - now
                if left <= 0:
                    self._fail(StatusCode.UNAVAILABLE, f"{self.peer} did not answer a keepalive ping within "
                                                       f"{settings.keepalive_timeout:g}s")
                else:
                    self._timer = self._loop.call_later(min(settings.keepalive_time, left), self._keepalive)
                return
            self._pinged_at = None
        quiet = now - self._last_read
        if quiet < settings.keepalive_time:
            self._timer = self._loop.call_later(settings.keepalive_time - quiet, self._keepalive)
            return
        if not self.calls and self.ready.done() and not settings.keepalive_without_calls:
            self._dormant = True  # until the next call wakes it, as grpc-go's keepalive sleeps
            return
        self._h2.ping(b"edgeagnt")
        self._flush()
        self._pinged_at = now
        self._timer = self._loop.call_later(min(settings.keepalive_time, settings.keepalive_timeout), self._keepalive)

    def _given_up(self, sent_at: float) -> None:
        """A call sent at `sent_at` (loop time) was given up. Nothing read since then: send a PING,
        and end the connection when nothing comes back within as long again (at least 1 s, at most
        keepalive_timeout). See the module's note."""
        if self.closed or self._transport is None or self._last_read >= sent_at or self._suspect is not None:
            return
        bound = min(max(self._loop.time() - sent_at, _SUSPECT_MIN), self.settings.keepalive_timeout)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.ping(b"deadline")
            self._flush()
        self._suspect = self._loop.call_later(bound, self._suspect_unanswered, self._loop.time(), bound)

    def _suspect_unanswered(self, pinged_at: float, bound: float) -> None:
        self._suspect = None
        if self._last_read < pinged_at:
            self._fail(StatusCode.UNAVAILABLE, f"{self.peer} sent nothing while a call waited for its answer and "
                                               f"did not answer a ping within {bound:g}s")

    # ---- frames --------------------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived,
                                h2.events.InformationalResponseReceived)):
            self._fields(event)
        elif isinstance(event, HeadersMidway):
            call = self.calls.get(event.stream_id)
            if call is not None:
                self._refuse(call, h2.errors.ErrorCodes.PROTOCOL_ERROR,
                             "a HEADERS frame cannot appear in the middle of a stream")
        elif isinstance(event, h2.events.StreamEnded):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.finish()
        elif isinstance(event, h2.events.StreamReset):
            call = self.calls.get(event.stream_id)
            if call is not None:
                code = from_reset(int(event.error_code))
                call.finish(GrpcStatusError(code, f"the server reset the stream ({_error_name(event.error_code)})",
                                            unprocessed=event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM))
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self.calls.values() if event.stream_id == 0 else [self.calls.get(event.stream_id)]
            for call in targets:
                if call is not None:
                    call.window.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.ready.done():
                self.ready.set_result(None)
            self._slot.set()  # MAX_CONCURRENT_STREAMS may have grown
            for call in self.calls.values():
                call.window.set()  # so may INITIAL_WINDOW_SIZE
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._going_away(event)

    def _fields(self, event: h2.events.ResponseReceived | h2.events.TrailersReceived |
                h2.events.InformationalResponseReceived) -> None:
        """An answer's head, its trailers, or an informational head: what grpc-go's framer refuses
        ends this call alone, INTERNAL with the framer's words, its stream reset."""
        call = self.calls.get(event.stream_id)
        if call is None or call.done.done():
            return
        fields = [(bytes(key), bytes(value)) for key, value in event.headers]
        if any(key == OVERSIZED for key, _ in fields):  # grpc-go's framer truncates it; operateHeaders fails it
            self._refuse(call, h2.errors.ErrorCodes.FRAME_SIZE_ERROR, "peer header list size exceeded limit")
        elif (problem := invalid_fields(fields)) is not None:
            self._refuse(call, h2.errors.ErrorCodes.PROTOCOL_ERROR, problem)
        elif isinstance(event, h2.events.ResponseReceived):
            headers = _header_dict(fields)
            status = headers.pop(":status", b"")  # read only for an answer without a gRPC status
            call.http_status = int(status) if status.isdigit() else 0
            call.headers = headers
        elif isinstance(event, h2.events.TrailersReceived):
            call.trailers = [(key.decode("latin-1"), value) for key, value in fields]

    def _refuse(self, call: Call, code: h2.errors.ErrorCodes, problem: str) -> None:
        """Ends `call` INTERNAL and resets its stream with `code`, as grpc-go's closeStream does."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.reset_stream(call.stream_id, code)
        call.finish(GrpcStatusError(StatusCode.INTERNAL, problem))

    def _data(self, event: h2.events.DataReceived) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        call = self.calls.get(event.stream_id)
        if call is None or call.done.done():
            return
        call.data += event.data
        if len(call.data) > call.limit + PREFIX.size:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.reset_stream(event.stream_id, h2.errors.ErrorCodes.CANCEL)
            call.finish(GrpcStatusError(StatusCode.RESOURCE_EXHAUSTED, f"received message larger than max "
                                                                       f"({len(call.data)} vs. {call.limit})"))
        elif event.stream_ended is not None:
            call.finish()

    def _going_away(self, event: h2.events.ConnectionTerminated) -> None:
        """GOAWAY: calls above last_stream_id were not processed and end UNAVAILABLE, `unprocessed`;
        the others may still finish here (`_H2Client` keeps h2 open for them)."""
        self.closed = True
        if event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM and event.additional_data == b"too_many_pings":
            self._too_many_pings()
        last = event.last_stream_id if event.last_stream_id is not None else 0
        detail = _error_name(event.error_code) + (f" {event.additional_data!r}" if event.additional_data else "")
        for stream_id, call in list(self.calls.items()):
            if stream_id > last:
                call.finish(GrpcStatusError(StatusCode.UNAVAILABLE, f"{self.peer} is going away ({detail}); the call "
                                                                    f"was not processed", unprocessed=True))
        if all(call.done.done() for call in self.calls.values()) and self._transport is not None:
            self._flush()  # what h2 answers to the frames read with the GOAWAY (a PING's ACK)
            self._transport.close()
        self._slot.set()

    # ---- calls ---------------------------------------------------------------------------------

    async def call(self, headers: list[tuple[bytes, bytes]], body: bytes) -> Call:
        """Send one request; returns the finished call (its status is read by the caller)."""
        while not self.closed and self._h2.open_outbound_streams >= self._h2.remote_settings.max_concurrent_streams:
            self._slot.clear()
            await self._slot.wait()
        if self.closed:
            raise Closed()
        try:
            stream_id = self._h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self.drain()
            raise Closed() from None
        call = Call(stream_id, self.settings.max_receive_bytes)
        self.calls[stream_id] = call
        if self._dormant:
            self._dormant = False
            self._keepalive()  # quiet for keepalive_time already: ping now
        sent_at = self._loop.time()
        try:
            self._h2.send_headers(stream_id, headers)
            await self._send(call, body)
            await call.done
        except asyncio.CancelledError:
            self._given_up(sent_at)  # its deadline passed, most likely: is the server still there?
            raise
        finally:
            call.finish()
            self._end_stream(stream_id)
            del self.calls[stream_id]
            self._slot.set()
            if self.closed and not self.calls and self._transport is not None:
                self._transport.close()
        return call

    def _end_stream(self, stream_id: int) -> None:
        """A stream still open on our side (cancelled, timed out, or answered before the whole
        request was sent) is reset, so it stops counting against MAX_CONCURRENT_STREAMS."""
        stream = self._h2.streams.get(stream_id)
        if stream is None or stream.closed or self._transport is None:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._flush()

    async def _send(self, call: Call, body: bytes) -> None:
        sent, total = 0, len(body)
        while sent < total and not call.done.done():
            try:
                size = min(self._h2.local_flow_control_window(call.stream_id), self._h2.max_outbound_frame_size,
                           total - sent)
            except h2.exceptions.StreamClosedError:
                return  # the server answered (or reset) before it took the whole request
            if size <= 0 or not self._writable.is_set():
                self._flush()
                call.window.clear()
                if not self._writable.is_set():
                    await self._writable.wait()
                else:
                    await call.window.wait()
                continue
            self._h2.send_data(call.stream_id, body[sent:sent + size], end_stream=sent + size == total)
            sent += size
            self._flush()


class Closed(Exception):
    """The connection took no new call (it is closing): open another one."""


def invalid_fields(fields: Sequence[tuple[bytes, bytes]]) -> str | None:
    """What grpc-go's HTTP/2 framer (x/net's readMetaFrame and checkPseudos) says of a header
    block it refuses as a stream error, in its words; None for one it passes on."""
    regular = False
    for name, value in fields:
        problem = f"invalid header field value for {go_quoted(name)}" if _CONTROL.search(value) else None
        if name[:1] == b":":
            if regular:
                problem = "pseudo header field after regular"
        else:
            regular = True
            if not name or _NOT_TOKEN.search(name):
                problem = f"invalid header field name {go_quoted(name)}"
        if problem is not None:
            return problem
    pseudo = [name for name, _ in fields if name[:1] == b":"]
    for index, name in enumerate(pseudo):
        if name != b":status" and name not in _REQUEST_PSEUDO:
            return f"invalid pseudo-header {go_quoted(name)}"
        if name in pseudo[:index]:
            return f"duplicate pseudo-header {go_quoted(name)}"
    if b":status" in pseudo and not _REQUEST_PSEUDO.isdisjoint(pseudo):
        return "mix of request and response pseudo headers"
    return None


def go_quoted(text: bytes) -> str:
    """Text as Go's %q shows it, in the words grpc-go's errors quote it with."""
    return '"' + text.decode("latin-1").encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _header_dict(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, bytes]:
    return {bytes(key).decode("latin-1"): bytes(value) for key, value in headers}


def _error_name(code: int | None) -> str:
    try:
        return h2.errors.ErrorCodes(code or 0).name
    except ValueError:
        return f"error code {code}"
