"""A gRPC client for unary calls, on asyncio and the pure-Python HTTP/2 library h2.

Why not grpcio: its client compresses with gzip and deflate only, while otelcol's receiver also
takes zstd and snappy; and the agent already serves gRPC on h2 (`receivers/grpc_server.py`), so
one HTTP/2 stack carries both directions and the process never loads grpcio's C core.

Design note:
- A `Channel` holds subchannels, each with at most one live `_Connection` (an asyncio.Protocol
  owning its h2 state machine). `pick_first` is one subchannel over every resolved address,
  tried in order; `round_robin` is one subchannel per address, calls taken in turn (an address
  refused in the last second is passed over while another answers). Names are resolved when
  the first call comes and again after every address failed. Calls on a
  connection are multiplexed streams, at most the server's MAX_CONCURRENT_STREAMS at a time (a
  call waits for a free stream within its deadline).
- Through a `proxy` (grpc-go's HTTPS_PROXY; `grpc_dial.py`) the proxy's name is resolved, one
  subchannel whatever the balancer, each connection a CONNECT tunnel to the unresolved target; a
  refused tunnel or an unusable proxy ends the calls UNAVAILABLE naming the proxy and its answer,
  a failure of any kind while connecting too.
- A connection is usable once the server's HTTP/2 preface (SETTINGS) has arrived, as in
  grpc-go; a peer that answers anything else (HTTP/1.1, garbage) fails the connection, and its
  calls end UNAVAILABLE with what the peer sent. A lost connection, a missed keepalive ping and
  a GOAWAY end UNAVAILABLE too: the calls a GOAWAY names as unprocessed (above its
  last_stream_id) right away, the others as they finish on the old connection; new calls open a
  new connection. The client does not retry: the export chain does, with its backoff.
- Reconnecting: a call that finds no live connection opens one. Without `wait_for_ready` a
  failed connect ends the call UNAVAILABLE at once (grpc's fail-fast); with it, the call tries
  again (backoff 1 s, ×1.6, at most 5 s) until its deadline, then ends DEADLINE_EXCEEDED with
  the last connect's error (grpc-go's "last connection error") or what the one under way awaits.
- Flow control: request DATA goes out as the peer's windows allow; response DATA is
  acknowledged as it arrives, and a response is held only up to `max_receive_bytes` (more ends
  the call RESOURCE_EXHAUSTED, as grpc-go's max receive size).
- Keepalive as grpc-go's client: after `keepalive_time` without a byte from the server (and a
  call open, or `keepalive_without_calls`) send a PING; nothing back within
  `keepalive_timeout` means the connection is dead: it is closed and its calls end UNAVAILABLE.
  A server that ends the connection with GOAWAY ENHANCE_YOUR_CALM "too_many_pings" makes the
  channel ping half as often from then on (grpc-go doubles its keepalive time too).
- Status: `grpc-status` / `grpc-message` (percent-decoded) from the trailers or a trailers-only
  answer; without them an HTTP status maps as gRPC's spec says (503 -> UNAVAILABLE), a reset
  stream as grpc-go maps HTTP/2 error codes. Failures raise `GrpcStatusError`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import unquote_to_bytes

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import ConnectionState
from hyperframe.frame import Frame, GoAwayFrame

from edgeagent.errors import BadRequestError
from edgeagent.exporters.grpc_dial import check_alpn, connect, failure, host_port, resolve, size_buffers, tunnel
from edgeagent.grpc_status import StatusCode, from_http, from_reset
from edgeagent.http1.dial import ClientError, ConnectError, shown_proxy
from edgeagent.receivers import codec
from edgeagent.receivers.grpc_call import ENCODINGS  # its import also quiets h2's frame logs (tokens)

_PREFIX = struct.Struct(">BI")
_ACCEPT_ENCODING = ",".join(ENCODINGS).encode()
_STREAM_WINDOW = 1 << 20
_CONNECTION_WINDOW = 8 << 20
_RESERVED = frozenset({"content-type", "te", "grpc-encoding", "grpc-accept-encoding", "grpc-timeout",
                       "user-agent", "host"})
_TIMEOUT_UNITS = (("n", 1), ("u", 10**3), ("m", 10**6), ("S", 10**9), ("M", 60 * 10**9), ("H", 3600 * 10**9))
_BACKOFF_FIRST, _BACKOFF_MAX = 1.0, 5.0  # grpc's connection backoff, capped low: calls have deadlines
_SKIP_FAILED = 1.0  # round_robin: an address refused this recently is passed over while others answer


class GrpcStatusError(Exception):
    """A call ended with a status other than OK; `trailers` are its metadata (`-bin` values as bytes).
    `unanswered`: no connection could be made at all (refused, unreachable, timed out, unresolved);
    None when the call's deadline passed, connecting or waiting. `from_server`: the server sent it."""

    def __init__(self, code: StatusCode, message: str, trailers: Sequence[tuple[str, str | bytes]] = (),
                 unanswered: bool | None = False, from_server: bool = False):
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.trailers = list(trailers)
        self.unanswered = unanswered
        self.from_server = from_server


@dataclass(frozen=True)
class ChannelSettings:
    host: str
    port: int
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
class _Call:
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


class _H2Client(h2.connection.H2Connection):
    """h2 closes its state machine on GOAWAY, and then refuses the frames of the calls the server
    still answers (those at or below last_stream_id): keep it open while such a call is open."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        frames, events = super()._receive_goaway_frame(frame)
        if any(stream.open and stream_id <= frame.last_stream_id for stream_id, stream in self.streams.items()):
            self.state_machine.state = ConnectionState.CLIENT_OPEN
        return frames, events


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection to a server; calls are its streams."""

    def __init__(self, settings: ChannelSettings, peer: str, too_many_pings: Callable[[], None] = lambda: None):
        self.settings = settings
        self._too_many_pings = too_many_pings
        self.peer = peer
        self.calls: dict[int, _Call] = {}
        self.closed = False  # no new calls: GOAWAY, lost, dead, or drained for new certificates
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._h2 = _H2Client(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self._transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._slot = asyncio.Event()  # a stream ended: a waiting call may open one
        self._first_bytes = b""  # what the peer sent before its preface, for the error message
        self._last_read = self._loop.time()
        self._pinged_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    # ---- transport -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        size_buffers(transport.get_extra_info("socket"), self.settings.receive_buffer, self.settings.send_buffer)
        self._h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 << 10,
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
        if self._timer is not None:
            self._timer.cancel()
        if not self.ready.done():
            self.ready.set_exception(GrpcStatusError(code, reason))
            self.ready.exception()  # retrieved: nobody may be waiting for it any more
        for call in list(self.calls.values()):
            call.finish(GrpcStatusError(code, reason))
        self._slot.set()
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
        active = bool(self.calls) or not self.ready.done() or settings.keepalive_without_calls
        if quiet < settings.keepalive_time or not active:
            self._timer = self._loop.call_later(max(settings.keepalive_time - quiet, 0.01), self._keepalive)
            return
        self._h2.ping(b"edgeagnt")
        self._flush()
        self._pinged_at = now
        self._timer = self._loop.call_later(min(settings.keepalive_time, settings.keepalive_timeout), self._keepalive)

    # ---- frames --------------------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.ResponseReceived):
            call = self.calls.get(event.stream_id)
            if call is not None:
                headers = _header_dict(event.headers)
                call.http_status = int(headers.pop(":status", b"0") or 0)
                call.headers = headers
        elif isinstance(event, h2.events.TrailersReceived):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.trailers = [(bytes(key).decode("latin-1"), bytes(value)) for key, value in event.headers]
        elif isinstance(event, h2.events.StreamEnded):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.finish()
        elif isinstance(event, h2.events.StreamReset):
            call = self.calls.get(event.stream_id)
            if call is not None:
                code = from_reset(int(event.error_code))
                call.finish(GrpcStatusError(code, f"the server reset the stream ({_error_name(event.error_code)})"))
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

    def _data(self, event: h2.events.DataReceived) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        call = self.calls.get(event.stream_id)
        if call is None or call.done.done():
            return
        call.data += event.data
        if len(call.data) > call.limit + _PREFIX.size:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.reset_stream(event.stream_id, h2.errors.ErrorCodes.CANCEL)
            call.finish(GrpcStatusError(StatusCode.RESOURCE_EXHAUSTED, f"received message larger than max "
                                                                       f"({len(call.data)} vs. {call.limit})"))
        elif event.stream_ended is not None:
            call.finish()

    def _going_away(self, event: h2.events.ConnectionTerminated) -> None:
        """GOAWAY: calls above last_stream_id were not processed and end UNAVAILABLE; the others
        may still finish here (`_H2Client` keeps h2 open for them)."""
        self.closed = True
        if event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM and event.additional_data == b"too_many_pings":
            self._too_many_pings()
        last = event.last_stream_id if event.last_stream_id is not None else 0
        detail = _error_name(event.error_code) + (f" {event.additional_data!r}" if event.additional_data else "")
        for stream_id, call in list(self.calls.items()):
            if stream_id > last:
                call.finish(GrpcStatusError(StatusCode.UNAVAILABLE, f"{self.peer} is going away ({detail}); the call "
                                                                    f"was not processed"))
        if all(call.done.done() for call in self.calls.values()) and self._transport is not None:
            self._transport.close()
        self._slot.set()

    # ---- calls ---------------------------------------------------------------------------------

    async def call(self, headers: list[tuple[bytes, bytes]], body: bytes) -> _Call:
        """Send one request; returns the finished call (its status is read by the caller)."""
        while not self.closed and self._h2.open_outbound_streams >= self._h2.remote_settings.max_concurrent_streams:
            self._slot.clear()
            await self._slot.wait()
        if self.closed:
            raise _Closed()
        try:
            stream_id = self._h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self.drain()
            raise _Closed() from None
        call = _Call(stream_id, self.settings.max_receive_bytes)
        self.calls[stream_id] = call
        try:
            self._h2.send_headers(stream_id, headers)
            await self._send(call, body)
            await call.done
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

    async def _send(self, call: _Call, body: bytes) -> None:
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


class _Closed(Exception):
    """The connection took no new call (it is closing): open another one."""


class _Subchannel:
    """One or more addresses (tried in order) and the connection to the first that answers."""

    def __init__(self, channel: Channel, addresses: list[tuple[str, int]], named: str = ""):
        self.channel = channel
        self.addresses = addresses
        self.named = named or channel.settings.host  # the host they are of: the target's, or its proxy's
        self.connection: _Connection | None = None
        self.failed_at = float("-inf")  # when a connect last failed
        self.waiting = ""  # what the connect under way waits for, if a call's deadline should say it
        self._connecting: asyncio.Task[_Connection] | None = None

    def live(self) -> bool:
        return self.connection is not None and not self.connection.closed

    async def get(self) -> _Connection:
        if self.connection is not None and not self.connection.closed:
            return self.connection
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._open())
            self._connecting.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self.connection = task.result()

    async def _open(self) -> _Connection:
        errors = []
        unanswered = True
        for address in self.addresses:
            try:
                return await self._connect(address)
            except GrpcStatusError as exc:
                errors.append(exc.message)
                unanswered = unanswered and exc.unanswered is True
        raise GrpcStatusError(StatusCode.UNAVAILABLE, "; ".join(errors), unanswered=unanswered)

    async def _connect(self, address: tuple[str, int]) -> _Connection:
        settings, context = self.channel.settings, self.channel.ssl_context
        target, proxy = host_port(settings.host, settings.port), shown_proxy(settings.proxy)
        peer = target + (f" through the proxy {proxy}" if settings.proxy else "") \
            + (f" ({address[0]})" if address[0] != self.named else "")
        loop = asyncio.get_running_loop()
        made: list[_Connection] = []
        sock: socket.socket | None = None  # to the proxy

        def protocol() -> _Connection:
            made.append(_Connection(settings, peer, self.channel.too_many_pings))
            return made[0]

        try:
            async with asyncio.timeout(settings.connect_timeout):
                server_hostname = (settings.server_hostname or settings.host) if context else None
                if settings.proxy:
                    sock = await connect(address)
                    self.waiting = f"the proxy {proxy} has not answered the CONNECT to {target}"
                    await tunnel(sock, settings.proxy, target, settings.user_agent)
                    self.waiting = ""
                    await loop.create_connection(protocol, sock=sock, ssl=context, server_hostname=server_hostname)
                else:
                    await loop.create_connection(protocol, address[0], address[1], ssl=context,
                                                 server_hostname=server_hostname)
                if context is not None:
                    check_alpn(made[0]._transport)
                await made[0].ready
        except BaseException as exc:
            self.waiting = ""
            if made:  # the TCP connection was made: the peer answered, if badly
                made[0].close()
            elif sock is not None:
                sock.close()
            if isinstance(exc, GrpcStatusError) or not isinstance(exc, Exception):  # CancelledError goes on
                raise
            why = failure(exc, settings.connect_timeout, tunnelling=sock is not None and not made)
            raise GrpcStatusError(StatusCode.UNAVAILABLE, f"cannot connect to {peer}: {why}",
                                  unanswered=not made and sock is None) from None
        return made[0]

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self._connecting is not None:
            self._connecting.cancel()


class Channel:
    """Unary gRPC calls to one target; see the module's design note."""

    def __init__(self, settings: ChannelSettings):
        self.settings = settings
        self.ssl_context = settings.ssl_context
        self._subchannels: list[_Subchannel] = []
        self._turn = 0
        self._scheme = b"https" if settings.ssl_context is not None else b"http"
        self._authority = (settings.authority or host_port(settings.host, settings.port)).encode()
        self._closed = False
        self._resolving = asyncio.Lock()

    def too_many_pings(self) -> None:
        """The server found our keepalive pings too frequent: ping half as often, as grpc-go does."""
        settings = self.settings
        if settings.keepalive_time > 0:
            self.settings = replace(settings, keepalive_time=settings.keepalive_time * 2)

    def use_ssl_context(self, context: ssl.SSLContext) -> None:
        """New certificates: calls in flight finish on their connections, new calls open new ones."""
        self.ssl_context = context
        for subchannel in self._subchannels:
            if subchannel.connection is not None:
                subchannel.connection.drain()

    async def close(self) -> None:
        self._closed = True
        for subchannel in self._subchannels:
            subchannel.close()
        self._subchannels = []

    async def unary(self, path: str, message: bytes, *, timeout: float, metadata: Sequence[tuple[str, str]] = (),
                    encoding: str = "", wait_for_ready: bool = False) -> bytes:
        """The response message of one call; raises GrpcStatusError. `message` is already compressed
        with `encoding` ("" for none; else gzip, zstd or snappy: see `encoding.grpc_compress`).
        A `timeout` of 0 is none: no deadline, no grpc-timeout (grpc-go without a deadline)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        body = _PREFIX.pack(1 if encoding else 0, len(message)) + message
        failures: list[str] = []  # this call's failed connects (with wait_for_ready it tries again)
        connected = False
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    connected = False
                    connection = await self._connection(wait_for_ready, failures)
                    connected = True
                    headers = self._headers(path, metadata, encoding,
                                            None if deadline is None else deadline - loop.time())
                    try:
                        call = await connection.call(headers, body)
                        break
                    except _Closed:
                        continue  # it started closing meanwhile: take another
        except TimeoutError:
            # a connect that hung or a server that did not answer: not known here (None)
            why = "" if connected else self._unconnected(failures)
            raise GrpcStatusError(StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout:g}s{why}",
                                  unanswered=None) from None
        return _outcome(call)

    def _unconnected(self, failures: list[str]) -> str:
        """Why a call had no connection at its deadline: what the connect under way waits for, and
        the last failed connect (grpc-go's "last connection error")."""
        waiting = [subchannel.waiting for subchannel in self._subchannels if subchannel.waiting]
        return "".join([f": {'; '.join(waiting)}" if waiting else "",
                        f"; last connection error: {failures[-1]}" if failures else ""])

    async def _connection(self, wait_for_ready: bool, failures: list[str]) -> _Connection:
        backoff = _BACKOFF_FIRST
        while True:
            if self._closed:
                raise GrpcStatusError(StatusCode.CANCELLED, "the channel was closed")
            try:
                return await self._pick()
            except GrpcStatusError as exc:
                failures.append(exc.message)
                if not wait_for_ready:
                    raise
            await asyncio.sleep(backoff)
            backoff = min(backoff * 1.6, _BACKOFF_MAX)

    async def _pick(self) -> _Connection:
        if not self._subchannels:
            async with self._resolving:  # one resolution for the calls that arrive together
                if not self._subchannels:
                    self._subchannels = await self._resolve()
        subchannels = self._subchannels
        now = asyncio.get_running_loop().time()
        # in turn over those not refused lately (all of them if every one was)
        candidates = [sub for sub in subchannels if sub.live() or now - sub.failed_at > _SKIP_FAILED] or subchannels
        errors: list[str] = []
        unanswered = True
        for offset in range(len(candidates)):
            subchannel = candidates[(self._turn + offset) % len(candidates)]
            try:
                connection = await subchannel.get()
            except GrpcStatusError as exc:
                subchannel.failed_at = asyncio.get_running_loop().time()
                errors.append(exc.message)
                unanswered = unanswered and exc.unanswered is True
                continue
            self._turn = (self._turn + offset + 1) % len(candidates)
            return connection
        self._subchannels = []  # resolve again next time: the addresses may have changed
        raise GrpcStatusError(StatusCode.UNAVAILABLE, "; ".join(errors), unanswered=unanswered)

    async def _resolve(self) -> list[_Subchannel]:
        """The target's addresses; through a proxy, the proxy's (the proxy resolves the target)."""
        settings = self.settings
        try:
            host, addresses = await resolve(settings.host, settings.port, settings.proxy)
        except ClientError as exc:  # unresolved: nothing answered; an unusable proxy: nothing is sent
            raise GrpcStatusError(StatusCode.UNAVAILABLE, str(exc), unanswered=isinstance(exc, ConnectError)) from None
        if settings.balancer == "round_robin" and not settings.proxy:
            return [_Subchannel(self, [address]) for address in addresses]
        return [_Subchannel(self, addresses, host)]

    def _headers(self, path: str, metadata: Sequence[tuple[str, str]], encoding: str,
                 remaining: float | None) -> list[tuple[bytes, bytes]]:
        headers = [(b":method", b"POST"), (b":scheme", self._scheme), (b":path", path.encode()),
                   (b":authority", self._authority), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
                   (b"user-agent", self.settings.user_agent.encode()), (b"grpc-accept-encoding", _ACCEPT_ENCODING)]
        if remaining is not None:
            headers.append((b"grpc-timeout", _timeout_header(remaining)))
        if encoding:
            headers.append((b"grpc-encoding", encoding.encode()))
        for key, value in metadata:
            key = key.lower()
            if key.startswith(":") or key in _RESERVED:
                continue
            headers.append((key.encode(), value.encode()))
        return headers


def _outcome(call: _Call) -> bytes:
    """The response message of a finished call, or the GrpcStatusError it ended with."""
    if call.error is not None:
        raise call.error
    fields = call.trailers if call.trailers else list(call.headers.items())
    status = dict(fields).get("grpc-status")
    metadata = [(key, _metadata_value(key, value)) for key, value in fields
                if key not in ("grpc-status", "grpc-message")]
    if status is None:
        if call.http_status != 200:
            code = from_http(call.http_status)
            raise GrpcStatusError(code, f"unexpected HTTP status {call.http_status} without a gRPC status")
        raise GrpcStatusError(StatusCode.INTERNAL, "the server ended the call without a gRPC status")
    try:
        code = StatusCode(int(status))
    except ValueError:
        code = StatusCode.UNKNOWN
    if code != StatusCode.OK:
        message = unquote_to_bytes(dict(fields).get("grpc-message", b"")).decode("utf-8", "replace")
        raise GrpcStatusError(code, message, metadata, from_server=True)
    return _message(call, call.headers.get("grpc-encoding", b"identity").decode("latin-1").strip().lower())


def _message(call: _Call, encoding: str) -> bytes:
    data = bytes(call.data)
    if len(data) < _PREFIX.size:
        raise GrpcStatusError(StatusCode.INTERNAL, "the server answered OK without a response message")
    flag, length = _PREFIX.unpack_from(data)
    if len(data) != _PREFIX.size + length:
        raise GrpcStatusError(StatusCode.INTERNAL, f"the response message has {len(data) - _PREFIX.size} bytes, "
                                                   f"its prefix says {length}")
    message = data[_PREFIX.size:]
    if not flag:
        return message
    if encoding in ("", "identity") or encoding not in ENCODINGS:
        raise GrpcStatusError(StatusCode.INTERNAL, f"a compressed response with grpc-encoding {encoding!r}")
    try:
        return codec.decompress(encoding, message, call.limit)
    except BadRequestError as exc:
        code = StatusCode.RESOURCE_EXHAUSTED if exc.status == 413 else StatusCode.INTERNAL
        raise GrpcStatusError(code, f"the response message: {exc}") from None


def _header_dict(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, bytes]:
    return {bytes(key).decode("latin-1"): bytes(value) for key, value in headers}


def _metadata_value(key: str, value: bytes) -> str | bytes:
    if key.endswith("-bin"):
        try:
            return base64.b64decode(value + b"=" * (-len(value) % 4))
        except ValueError:
            return b""
    return value.decode("latin-1")


def _timeout_header(seconds: float) -> bytes:
    """grpc-timeout: at most 8 digits, in the finest unit that holds them."""
    nanos = max(math.ceil(seconds * 1e9), 1)
    for unit, size in _TIMEOUT_UNITS:
        value = math.ceil(nanos / size)
        if value < 10**8:
            return f"{value}{unit}".encode()
    return b"99999999H"


def _error_name(code: int | None) -> str:
    try:
        return h2.errors.ErrorCodes(code or 0).name
    except ValueError:
        return f"error code {code}"

