"""One client connection of the gRPC server (grpc_server.py, whose note says how it works): its h2
state machine, its calls' streams, flow control, keepalive and GOAWAY.

Imported with a server's first connection: h2, hpack and hyperframe are loaded then.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from edgeagent.receivers import h2_limits, http1_probe
from edgeagent.receivers.grpc_call import (
    DEADLINE_EXCEEDED,
    DEADLINE_MESSAGE,
    ENCODINGS,
    INTERNAL,
    OK,
    PREFIX,
    UNAVAILABLE,
    UNIMPLEMENTED,
    GrpcCall,
    GrpcError,
    Handler,
    Limits,
    malformed,
    not_grpc,
    parse_timeout,
    quiet_h2,
    status_trailers,
    trailers_only,
    unbase64,
    unknown_authority,
)

quiet_h2()
log = logging.getLogger(__name__)
_ACCEPT_ENCODING = ",".join(ENCODINGS).encode()
_RESERVED = frozenset({b"content-type", b"te", b"grpc-encoding", b"grpc-accept-encoding", b"grpc-timeout",
                       b"grpc-message-type"})
_RESETS_ALLOWED = 100  # calls a peer may reset (or streams open over the limit) beyond twice those answered
_PING_STRIKES = 2  # grpc-go's maxPingStrikes: the third ping out of policy ends the connection
_PING_WITHOUT_CALLS = 7200.0  # grpc-go: without permission, a ping without calls may come every 2h
_STREAMS_BEFORE_SETTINGS = 100  # streams a client opens before it reads our limit (grpc-go's default)
_LINGER_SECONDS = 1.0  # after an error: how long what the peer still sends is read and dropped



@dataclass
class _Pending:
    """Response bytes a stream still has to send when the peer's window opens."""

    data: bytes
    trailers: list[tuple[bytes, bytes]]
    sent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Server(Protocol):
    """What a connection asks of the server that accepted it (grpc_server.GrpcServer)."""

    handlers: dict[str, Handler]
    healthy: Callable[[], bool] | None
    limits: Limits
    connections: set[Connection]


class Connection(asyncio.Protocol):
    """One client's HTTP/2 connection and the calls on it."""

    def __init__(self, server: Server):
        self.server = server
        self.limits = server.limits
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.calls: dict[int, GrpcCall] = {}
        self._pending: dict[int, _Pending] = {}
        self._connection_blocked = False  # an answer waits for the connection's window, not only its stream's
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        # the headers we send are constant or built here, lowercase and valid: checking them costs
        # as much as encoding them
        self._h2 = h2_limits.LengthBlindConnection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))  # checked per stream: _start_call
        self._frames = h2_limits.HeaderBlockBound(self.limits.max_header_list_size)
        self._h2.incoming_buffer = self._frames
        self._write_paused = False  # the peer does not read what we send...
        self._backlogged = False  # ...or sent more frames than one turn of the loop takes: reading waits
        self._h2.decoder = h2_limits.HeaderListBound(self.limits.max_header_list_size)
        self._h2.encoder = h2_limits.BoundedEncoder()
        self._metadata: dict[int, int] = {}  # the header list size each call holds...
        self._metadata_held = 0  # ...and their sum, bounded by the connection window as the unread DATA is
        self._going_away = False
        self._lingering = False  # closing: what the peer still sends is read and dropped
        self._last_stream = 0
        self._answered = 0
        self._cancelled = 0  # calls the peer reset before their answer, and streams refused over the limit
        self._loop = asyncio.get_running_loop()
        self._idle_since = self._last_read = self._loop.time()
        self._heard = False  # whether the peer sent anything yet (its first bytes may be a health check)
        self._timeout = self.limits.handshake_timeout
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pinged_at: float | None = None  # our keepalive ping awaiting any byte from the peer
        self._last_ping = float("-inf")  # the peer's last ping
        self._ping_strikes = 0
        self._answered_since_ping = False  # grpc-go forgives a peer's strikes once it was answered

    # ---- transport -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._set_buffers(transport)
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else ""
        limits = self.limits
        self._h2.local_settings = _settings(limits, limits.max_concurrent_streams)
        self._h2.decoder.max_header_list_size = limits.max_header_list_size
        self._h2.max_inbound_frame_size = limits.max_frame_size
        self._h2.initiate_connection()
        # that advertised the stream limit, which _start_call enforces stream by stream; h2's own
        # check ends the whole connection, so it only stops a peer far beyond the limit
        self._h2.local_settings = _settings(limits, limits.max_concurrent_streams + _STREAMS_BEFORE_SETTINGS)
        self._h2.increment_flow_control_window(limits.connection_window - self._h2.inbound_flow_control_window)
        if self.server.healthy is None:  # else the preface waits for the peer's first bytes (http1_probe)
            self._flush()
        self._after("idle", self._timeout, self._check_idle)
        self._after("keepalive", limits.ping_after, self._keepalive)
        if limits.max_age:
            self._after("age", limits.max_age * random.uniform(0.9, 1.1), self._too_old)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self.tasks.values():
            task.cancel()
        for pending in self._pending.values():
            pending.done.set()
        # a cancelled call ends without answering, so nothing else takes it off: kept here, the calls
        # (with the message parts they had received, megabytes) and their tasks would stay in a cycle
        # through this connection until the cycle collector ran
        self.calls.clear()
        self.tasks.clear()
        self._pending.clear()
        self._transport = None
        self._h2.release()  # no frame comes any more: h2's cycle is undone (h2_limits)

    def pause_writing(self) -> None:
        self._write_paused = True  # the peer does not read: stop taking its frames
        self._reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._reading()

    def _reading(self) -> None:
        if self._transport is None or self._lingering:
            return
        if self._write_paused or self._backlogged:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if not self._heard:
            self._heard = True
            if self.server.healthy is not None and http1_probe.answered(self._transport, data, self.server.healthy):
                return
        self._last_read = self._loop.time()
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        """Handle `data` and the frames still buffered, a turn's worth (h2_limits.FRAMES_PER_TURN);
        with more left, reading waits and the next turn takes them, after the other connections."""
        if self._transport is None or self._lingering:
            return
        self._frames.frames_left = h2_limits.FRAMES_PER_TURN
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._protocol_error(exc)
            return
        for event in events:
            self._handle(event)
        self._flush()
        backlogged = self._frames.frames_left <= 0 and self._frames.buffered() >= 9
        if backlogged:
            self._loop.call_soon(self._receive, b"")
        if backlogged != self._backlogged:
            self._backlogged = backlogged
            self._reading()

    def _flush(self) -> None:
        """Write what h2 has to send now: deferring it to the end of the loop's turn (to merge
        writes) measured slower in the agent, whose turns hold other requests' parsing."""
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._lingering:
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()

    def go_away(self) -> None:
        """Tell the peer to open no more streams; the ones it opened so far finish."""
        if self._going_away or self._transport is None or self._lingering:
            return
        self._going_away = True
        # written beside h2's state machine, which would refuse to send the responses still due
        self._flush()
        self._transport.write(GoAwayFrame(0, last_stream_id=self._last_stream, error_code=0).serialize())
        if not self.tasks:
            self.close()

    def _linger_close(self) -> None:
        """Close after an error without losing the GOAWAY that says why: closing a socket with unread
        input makes the kernel reset the connection, and a reset can overtake what was written.
        Send FIN, drop what still arrives for a moment, then close (a lingering close)."""
        transport = self._transport
        if transport is None or self._lingering:
            return
        self._flush()
        if not transport.can_write_eof():  # TLS: no half-close
            transport.close()
            return
        self._lingering = True
        transport.resume_reading()  # paused (a backlog of frames, a peer not reading): what comes is dropped
        transport.write_eof()
        self._loop.call_later(_LINGER_SECONDS, transport.close)

    def _protocol_error(self, exc: Exception) -> None:
        code = getattr(exc, "error_code", h2.errors.ErrorCodes.PROTOCOL_ERROR)
        try:
            self._h2.close_connection(error_code=code, additional_data=str(exc).encode()[:128])
        except h2.exceptions.ProtocolError:
            pass
        self._linger_close()

    def _calm_down(self, reason: bytes = b"") -> None:
        """A peer that opens calls only to reset them (HTTP/2 "rapid reset") makes work without
        limit while staying under the concurrent-stream bound, and so does one opening streams over
        it (each refused, its call never made); one that pings without pause makes work without
        calls: end its connection."""
        try:
            self._h2.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, additional_data=reason)
        except h2.exceptions.ProtocolError:
            pass
        self._linger_close()

    def _set_buffers(self, transport: asyncio.Transport) -> None:
        """read_buffer_size / write_buffer_size: the kernel's buffers, set before the first byte."""
        sock = transport.get_extra_info("socket")
        sizes = ((socket.SO_RCVBUF, self.limits.receive_buffer), (socket.SO_SNDBUF, self.limits.send_buffer))
        for option, size in sizes:
            if size and sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, option, size)

    # ---- lifetime ------------------------------------------------------------------------------

    def _after(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._timers[name] = self._loop.call_later(delay, callback)

    def _check_idle(self) -> None:
        if self._transport is None:
            return
        idle = self._loop.time() - self._idle_since
        if not self.tasks and idle >= self._timeout:
            self.go_away()
            self.close()
            return
        self._after("idle", max(self._timeout - idle, 1.0), self._check_idle)

    def _keepalive(self) -> None:
        """grpc-go's server keepalive: a peer silent for `ping_after` is pinged, and one that sends
        nothing for `ping_timeout` after that is gone (its connection closes)."""
        if self._transport is None:
            return
        now = self._loop.time()
        if self._pinged_at is not None and self._last_read <= self._pinged_at:
            self.close()
            return
        self._pinged_at = None
        quiet = now - self._last_read
        if quiet < self.limits.ping_after:
            self._after("keepalive", self.limits.ping_after - quiet, self._keepalive)
            return
        self._h2.ping(os.urandom(8))
        self._flush()
        self._pinged_at = now
        self._after("keepalive", self.limits.ping_timeout, self._keepalive)

    def _too_old(self) -> None:
        """max_connection_age: no new calls; those in flight get `age_grace`, if set."""
        self.go_away()
        if self.limits.age_grace and self._transport is not None:
            self._after("age", self.limits.age_grace, self.close)

    def _pinged(self) -> None:
        """grpc-go's enforcement policy: a ping sooner than `min_ping_interval` after the last
        one (without calls and permission: sooner than 2h) is a strike, unless the server answered
        something since; more than two strikes end the connection."""
        now = self._loop.time()
        last, self._last_ping = self._last_ping, now
        if self._answered_since_ping:
            self._answered_since_ping = False
            self._ping_strikes = 0
            return
        allowed = self.limits.min_ping_interval if self.tasks or self.limits.pings_without_calls \
            else _PING_WITHOUT_CALLS
        if now - last < allowed:
            self._ping_strikes += 1
            if self._ping_strikes > _PING_STRIKES:
                self._calm_down(b"too_many_pings")

    # ---- frames --------------------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            call = self.calls.get(event.stream_id)
            if call is None:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                if event.flow_controlled_length > len(event.data):  # padding is nobody's to read
                    self._h2.acknowledge_received_data(event.flow_controlled_length - len(event.data),
                                                       event.stream_id)
                call._push(event.data)
            if event.stream_ended is not None and call is not None:
                call._end()
        elif isinstance(event, h2.events.RequestReceived):
            self._start_call(event)
        elif isinstance(event, h2.events.StreamEnded):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call._end()
        elif isinstance(event, h2.events.StreamReset):
            self._stream_gone(event.stream_id)
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                self._send_pending(event.stream_id)
            elif self._connection_blocked:
                self._send_blocked()
        elif isinstance(event, h2.events.PingReceived):
            self._pinged()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._settings_changed(event)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()

    def _settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        if self._timeout != self.limits.idle_timeout:
            self._timeout = self.limits.idle_timeout  # the preface is in: from now on, idle means no calls
            self._timers["idle"].cancel()
            self._check_idle()
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            for stream_id in list(self._pending):  # every stream's window changed, with no WINDOW_UPDATE
                self._send_pending(stream_id)

    def _start_call(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        self._last_stream = max(self._last_stream, stream_id)
        if self._going_away or len(self.calls) >= self.limits.max_concurrent_streams:
            self._refuse(stream_id, None)  # as grpc-go: only this stream, which clients retry transparently
            if not self._going_away:  # beyond the limit the peer was told: work without a call
                self._wasted()
            return
        fields = [(bytes(key), bytes(value)) for key, value in event.headers]
        if malformed(fields):  # as grpc-go: this stream alone, where h2's check ended the connection
            self._refuse(stream_id, None, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        headers: dict[bytes, bytes] = {}
        metadata: list[tuple[str, str | bytes]] = []
        size = 0
        for key, value in fields:
            size += 32 + len(key) + len(value)
            if key == h2_limits.OVERSIZED:  # grpc-go resets this stream alone, which clients see as INTERNAL
                self._refuse(stream_id, None, h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
                return
            if key.startswith(b":") or key in _RESERVED:
                headers[key] = value
            elif key.endswith(b"-bin"):
                metadata.append((key.decode("ascii", "replace"), unbase64(value)))
            else:
                metadata.append((key.decode("ascii", "replace"), value.decode("latin-1")))
        refusal, deadline = unknown_authority(fields) or not_grpc(headers), None
        if refusal is None:
            refusal, deadline = self._deadline(headers.get(b"grpc-timeout"))
        if refusal is None and self._metadata_held + size > self.limits.connection_window:
            refusal = trailers_only(UNAVAILABLE, "the calls in progress on this connection hold too much metadata")
        if refusal is not None:
            self._refuse(stream_id, refusal)
            return
        self._metadata[stream_id] = size
        self._metadata_held += size
        method = headers.get(b":path", b"").decode("latin-1")
        encoding = headers.get(b"grpc-encoding", b"identity").decode("latin-1").strip().lower()
        call = GrpcCall(self, stream_id, method, metadata, encoding, self._peer, deadline)
        self.calls[stream_id] = call
        self._idle_since = self._loop.time()
        task = self._loop.create_task(self._run(call, self.server.handlers.get(method)))
        self.tasks[stream_id] = task
        if deadline is not None:
            timer = self._loop.call_at(deadline, call._expire, task)
            task.add_done_callback(lambda _: timer.cancel())

    def _deadline(self, timeout: bytes | None) -> tuple[list[tuple[bytes, bytes]] | None, float | None]:
        """The call's deadline (the loop's time), counted from the arrival of its headers; or grpc-go's
        answer to a grpc-timeout it cannot read (400, INTERNAL) or one spent already: a handler never
        sees either call."""
        try:
            seconds = parse_timeout(timeout)
        except GrpcError as exc:
            return trailers_only(exc.code, exc.message, b"400"), None
        if seconds is None:
            return None, None
        deadline = self._last_read + seconds
        if self._loop.time() >= deadline:
            return trailers_only(DEADLINE_EXCEEDED, DEADLINE_MESSAGE), None
        return None, deadline

    def _refuse(self, stream_id: int, answer: list[tuple[bytes, bytes]] | None,
                code: h2.errors.ErrorCodes = h2.errors.ErrorCodes.REFUSED_STREAM) -> None:
        """End a stream no call is made for, with `answer` or else a reset with `code`. What the peer
        sent in the same read may have closed it already (a reset, and h2 forgets a closed stream
        once a later one opens) or the connection (a GOAWAY): then nothing is left to answer."""
        try:
            if answer is None:
                self._h2.reset_stream(stream_id, code)
            else:
                self._h2.send_headers(stream_id, answer, end_stream=True)
        except h2.exceptions.ProtocolError:
            pass

    def _stream_gone(self, stream_id: int) -> None:
        """The peer reset the stream: end its call, give back its window."""
        call = self.calls.pop(stream_id, None)
        self._metadata_held -= self._metadata.pop(stream_id, 0)
        task = self.tasks.pop(stream_id, None)
        if task is not None:
            task.cancel()
            self._wasted()
        pending = self._pending.pop(stream_id, None)
        if pending is not None:
            pending.done.set()
        if call is not None:
            unread = sum(len(chunk) for chunk in call._chunks) + call._unacknowledged
            call._unacknowledged = 0
            call._chunks.clear()
            self.consumed(stream_id, unread)
        self._refill()

    def _wasted(self) -> None:
        """The peer reset a call before its answer, or opened a stream over the limit: beyond
        `_RESETS_ALLOWED` more than twice the calls answered, its connection ends (_calm_down)."""
        self._cancelled += 1
        if self._cancelled > _RESETS_ALLOWED + 2 * self._answered:
            self._calm_down()

    def consumed(self, stream_id: int, size: int) -> None:
        """`size` bytes of a stream were taken by its call: the peer may send that much more."""
        if self._transport is None or size <= 0:
            return
        try:
            self._h2.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            pass  # the stream is gone; h2 has counted the connection window already
        self._flush()

    def _refill(self) -> None:
        """Data that arrived for streams already closed is never handed over, so h2 never counts it
        as read: with no call open nothing is buffered, so open the connection window fully again."""
        missing = self.limits.connection_window - self._h2.inbound_flow_control_window
        if not self.calls and missing > self.limits.connection_window // 2:
            self._h2.increment_flow_control_window(missing)

    # ---- calls ---------------------------------------------------------------------------------

    async def _run(self, call: GrpcCall, handler: Handler | None) -> None:
        """Run the handler and answer with its outcome; a deadline that passes while the server
        answers for it (GrpcCall) cancels the handler and is answered DEADLINE_EXCEEDED."""
        stream_id = call._stream_id
        trailers: Sequence[tuple[str, str | bytes]] = ()
        response = None
        try:
            if handler is None:
                raise GrpcError(UNIMPLEMENTED, f"unknown method {call.method}")
            if call.encoding not in ENCODINGS:
                raise GrpcError(UNIMPLEMENTED, f"grpc-encoding {call.encoding!r} is not supported; "
                                               f"use one of {', '.join(ENCODINGS)}")
            response = await handler(call)
            code, message = OK, ""
        except GrpcError as exc:
            code, message, trailers = exc.code, exc.message, exc.trailers
        except asyncio.CancelledError:
            if not call.expired:
                raise  # the peer reset the stream, or the server stops: nobody to answer
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the deadline's cancel is answered here, not passed on
            code, message = DEADLINE_EXCEEDED, DEADLINE_MESSAGE
        except Exception as exc:  # a handler maps its errors itself; this is a bug, answered as one
            log.error("gRPC call failed unexpectedly", exc_info=exc, extra={"method": call.method})
            code, message = INTERNAL, f"internal error: {type(exc).__name__}"
        try:
            await self._respond(stream_id, response, status_trailers(code, message, trailers))
        except h2.exceptions.ProtocolError:
            pass  # the peer closed the stream or the connection meanwhile: nobody to answer
        finally:
            self.tasks.pop(stream_id, None)
            self._idle_since = self._loop.time()
            self._finish(stream_id)

    async def _respond(self, stream_id: int, response: bytes | None,
                       trailers: list[tuple[bytes, bytes]]) -> None:
        if self._transport is None or stream_id not in self.calls:
            return
        head = [(b":status", b"200"), (b"content-type", b"application/grpc"),
                (b"grpc-accept-encoding", _ACCEPT_ENCODING)]
        self._answered_since_ping = True
        if response is None:  # trailers only
            self._h2.send_headers(stream_id, head + trailers, end_stream=True)
            self._flush()
            return
        self._h2.send_headers(stream_id, head)
        pending = _Pending(PREFIX.pack(0, len(response)) + response, trailers)
        self._pending[stream_id] = pending
        self._send_pending(stream_id)
        await pending.done.wait()

    def _send_blocked(self) -> None:
        """The connection's window opened: the answers that waited for it go on, in turn, until it
        closes again. Answers waiting for their own stream's window are not tried: with a thousand
        of them, each WINDOW_UPDATE for the connection cost the loop 0.6 ms."""
        self._connection_blocked = False
        for stream_id in list(self._pending):
            if self._h2.outbound_flow_control_window <= 0:
                self._connection_blocked = True
                return
            self._send_pending(stream_id)

    def _send_pending(self, stream_id: int) -> None:
        pending = self._pending.get(stream_id)
        if pending is None or self._transport is None:
            return
        try:
            while pending.sent < len(pending.data):
                size = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size,
                           len(pending.data) - pending.sent)
                if size <= 0:
                    self._connection_blocked |= self._h2.outbound_flow_control_window <= 0
                    self._flush()
                    return  # wait for WINDOW_UPDATE
                self._h2.send_data(stream_id, pending.data[pending.sent:pending.sent + size])
                pending.sent += size
            self._h2.send_headers(stream_id, pending.trailers, end_stream=True)
        except h2.exceptions.ProtocolError:
            pass  # the stream or the connection was closed meanwhile: nobody to answer
        self._flush()
        del self._pending[stream_id]
        pending.done.set()

    def _finish(self, stream_id: int) -> None:
        """The response is out: a peer still sending learns it may stop, and its unread data is
        given back to the connection window."""
        call = self.calls.pop(stream_id, None)
        self._metadata_held -= self._metadata.pop(stream_id, 0)
        if call is None or self._transport is None:
            return
        self._answered += 1
        if not call._ended:
            try:
                self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass  # closed already, or the connection is
        unread = sum(len(chunk) for chunk in call._chunks) + call._unacknowledged
        call._unacknowledged = 0
        call._chunks.clear()
        if unread:
            self.consumed(stream_id, unread)
        self._refill()
        self._flush()
        if self._going_away and not self.tasks:
            self.close()


def _settings(limits: Limits, streams: int) -> h2.settings.Settings:
    return h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: streams,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window,
        # fewer, larger DATA frames from clients that follow it (grpcio): h2's cost is per frame
        h2.settings.SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
    })
