"""A gRPC client for unary calls, on asyncio and the pure-Python HTTP/2 library h2.

Why not grpcio: its client compresses with gzip and deflate only, while otelcol's receiver also
takes zstd and snappy; and the agent already serves gRPC on h2 (`receivers/grpc_server.py`), so
one HTTP/2 stack carries both directions and the process never loads grpcio's C core.

Design note:
- A `Channel` holds subchannels, each with at most one live `Connection` (an asyncio.Protocol
  owning its h2 state machine; grpc_connection.py, with its own note). `pick_first` is one
  subchannel over every resolved address, IPv6 and IPv4 interleaved, each connect started 250 ms
  into the one before or as soon as it failed, the first to answer kept (grpc-go's happy
  eyeballs): an address that drops SYNs costs 250 ms, not the connect timeout. `round_robin` is
  one subchannel per address: calls go in turn to those connected, never waiting on one that is
  still connecting; the others reconnect beside them, an address that failed after a backoff
  (1 s, ×1.6, at most 120 s, as grpc-go's). With none connected, a call takes the first to
  connect. Names are resolved when the first call comes and again whenever no connection is live
  or under way, so a name whose address changed (a Service re-created, a new lease) is followed
  once the old connection is lost; a name that stops resolving, or whose lookup takes more than
  a second, keeps the addresses it had, as grpc-go keeps them while its resolver works. Calls
  on a connection are multiplexed streams, at most the server's MAX_CONCURRENT_STREAMS at a
  time (a call waits for a free stream within its deadline).
- Through a `proxy` (grpc-go's HTTPS_PROXY; `grpc_dial.py`) the proxy's name is resolved, one
  subchannel whatever the balancer, each connection a CONNECT tunnel to the unresolved target; a
  refused tunnel or an unusable proxy ends the calls UNAVAILABLE naming the proxy and its answer,
  a failure of any kind while connecting too.
- A unix socket (`unix_path`) is one subchannel, connected to without a lookup or a proxy, as
  grpc-go's unix resolver hands its one address to the transport.
- Reconnecting: a call that finds no live connection opens one. Without `wait_for_ready` a
  failed connect ends the call UNAVAILABLE at once (grpc's fail-fast); with it, the call tries
  again (backoff 1 s, ×1.6, at most 5 s) until its deadline, then ends DEADLINE_EXCEEDED with
  the last connect's error (grpc-go's "last connection error") or what the one under way awaits.
  A call whose deadline passes on a connection silent since the call was sent has the
  connection ping the server; one that stays silent is closed, so the next calls reconnect
  (grpc_connection.py: a path that went silent without a FIN or a reset).
- A call the server did not take (GOAWAY above its stream, REFUSED_STREAM: `unprocessed`) is
  sent once more, after a GOAWAY on a new connection, as grpc-go's transparent retry: an upstream
  that ends its connections on purpose (max_connection_age, a rolling restart, a draining proxy)
  costs the export chain no failed attempt, no backoff and no step towards "offline". A call not
  taken twice ends UNAVAILABLE like any other.
- Status: `grpc-status` (read as Go's ParseInt reads it) / `grpc-message` (percent-decoded) from
  the trailers or a trailers-only answer; without them an HTTP status maps as gRPC's spec says
  (503 -> UNAVAILABLE), a reset stream as grpc-go maps HTTP/2 error codes. Failures raise
  `GrpcStatusError`.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import unquote_to_bytes

from edgeagent.errors import BadRequestError
from edgeagent.exporters.grpc_connection import (
    PREFIX,
    Call,
    ChannelSettings,
    Closed,
    Connection,
    GrpcStatusError,
    go_quoted,
)
from edgeagent.exporters.grpc_dial import check_alpn, connect, failure, host_port, resolve, tunnel
from edgeagent.grpc_status import StatusCode, from_http
from edgeagent.http1 import eyeballs
from edgeagent.http1.dial import ClientError, ConnectError, shown_proxy
from edgeagent.receivers import codec
from edgeagent.receivers.grpc_call import ENCODINGS, quiet_h2, unbase64
from edgeagent.runtime import suspensions

quiet_h2()  # the connections' h2 (grpc_connection.py)
_ACCEPT_ENCODING = ",".join(ENCODINGS).encode()
_RESERVED = frozenset({"content-type", "te", "grpc-encoding", "grpc-accept-encoding", "grpc-timeout",
                       "user-agent", "host"})
_TIMEOUT_UNITS = (("n", 1), ("u", 10**3), ("m", 10**6), ("S", 10**9), ("M", 60 * 10**9), ("H", 3600 * 10**9))
_BACKOFF_FIRST, _BACKOFF_MAX = 1.0, 5.0  # grpc's connection backoff, capped low: calls have deadlines
_STATUS = re.compile(rb"[+-]?[0-9]+")  # what Go's strconv.ParseInt reads in base 10
_RECONNECT_FIRST, _RECONNECT_MAX = 1.0, 120.0  # an address that failed is tried again after this, ×1.6 each time
_LOOKUP_WAIT = 1.0  # seconds a reconnect waits for the name's new addresses before it takes those it had
_CONNECTION_DELAY = 0.25  # pick_first: the next address starts this long into a connect (grpc-go's happy eyeballs)


class _Subchannel:
    """One or more addresses (tried in order) and the connection to the first that answers."""

    def __init__(self, channel: Channel, addresses: list[tuple[str, int]], named: str = ""):
        self.channel = channel
        self.addresses = addresses
        self.named = named or channel.settings.host  # the host they are of: the target's, or its proxy's
        self.connection: Connection | None = None
        self.failed_at = float("-inf")  # when a connect last failed
        self.failures = 0  # connects failed in a row: each waits longer before the next (due)
        self.waiting = ""  # what the connect under way waits for, if a call's deadline should say it
        self._connecting: asyncio.Task[Connection] | None = None

    def live(self) -> bool:
        return self.connection is not None and not self.connection.closed

    def connecting(self) -> bool:
        return self._connecting is not None

    def due(self, now: float) -> bool:
        """Whether its last failed connect is long enough ago to try again (grpc-go's reconnect backoff)."""
        return now >= self.failed_at + min(_RECONNECT_FIRST * 1.6 ** max(self.failures - 1, 0), _RECONNECT_MAX)

    def start(self) -> asyncio.Task[Connection]:
        """The connect under way, started now if none is."""
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._open())
            self._connecting.add_done_callback(self._opened)
        return self._connecting

    async def get(self) -> Connection:
        if self.connection is not None and not self.connection.closed:
            return self.connection
        connecting = self.start()
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if connecting.cancelled() and current is not None and not current.cancelling():
                # the subchannel was closed under the call (its address no longer resolved), not the call
                raise GrpcStatusError(StatusCode.UNAVAILABLE, f"the connect to {self.named} was abandoned",
                                      unanswered=True) from None
            raise

    def _opened(self, task: asyncio.Task[Connection]) -> None:
        self._connecting = None
        if task.cancelled():
            return
        if task.exception() is None:
            self.connection = task.result()
            self.failures = 0
            return
        self.failures += 1
        self.failed_at = asyncio.get_running_loop().time()

    async def _open(self) -> Connection:
        """A connection to the first address that answers: each started 250 ms into the one before,
        or when it failed, the families interleaved (grpc-go's pick_first, gRFC A61)."""
        attempts = [functools.partial(self._connect, address) for address in _interleaved(self.addresses)]
        try:
            return await eyeballs.first_of(attempts, _CONNECTION_DELAY, discard=Connection.close)
        except eyeballs.AllFailed as failed:
            raise _unavailable(failed.errors) from None

    async def _connect(self, address: tuple[str, int]) -> Connection:
        settings, context = self.channel.settings, self.channel.ssl_context
        target, proxy = host_port(settings.host, settings.port), shown_proxy(settings.proxy)
        if settings.unix_path:
            peer = f"the unix socket {settings.unix_path.replace(chr(0), '@')}"
        else:
            peer = target + (f" through the proxy {proxy}" if settings.proxy else "") \
                + (f" ({address[0]})" if address[0] != self.named else "")
        loop = asyncio.get_running_loop()
        made: list[Connection] = []
        sock: socket.socket | None = None  # to the proxy

        def protocol() -> Connection:
            made.append(Connection(settings, peer, self.channel.too_many_pings))
            return made[0]

        try:
            async with asyncio.timeout(settings.connect_timeout):
                server_hostname = (settings.server_hostname or settings.host) if context else None
                if settings.unix_path:
                    await loop.create_unix_connection(protocol, settings.unix_path, ssl=context,
                                                      server_hostname=server_hostname)
                elif settings.proxy:
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
        body = PREFIX.pack(1 if encoding else 0, len(message)) + message
        failures: list[str] = []  # this call's last failed connect (with wait_for_ready it tries again)
        connected = False
        sent_again = False  # the server did not take the call once: it was sent again
        try:
            async with suspensions.timeout_at(deadline) as scope:
                while True:
                    connected = False
                    connection = await self._connection(wait_for_ready, failures)
                    connected = True
                    headers = self._headers(path, metadata, encoding,
                                            _left(scope, loop.time()))
                    try:
                        call = await connection.call(headers, body)
                    except Closed:
                        continue  # it started closing meanwhile: take another
                    if call.error is None or not call.error.unprocessed or sent_again:
                        break
                    sent_again = True  # not taken (GOAWAY, REFUSED_STREAM): once more, on a new connection
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

    async def _connection(self, wait_for_ready: bool, failures: list[str]) -> Connection:
        backoff = _BACKOFF_FIRST
        while True:
            if self._closed:
                raise GrpcStatusError(StatusCode.CANCELLED, "the channel was closed")
            try:
                return await self._pick()
            except GrpcStatusError as exc:
                failures[:] = [exc.message]  # the last only: without a deadline a call may try for days
                if not wait_for_ready:
                    raise
            await asyncio.sleep(backoff)
            backoff = min(backoff * 1.6, _BACKOFF_MAX)

    async def _pick(self) -> Connection:
        """A live connection, in turn over the live subchannels; with none, the first of the
        subchannels to connect (all started at once, as grpc-go's round_robin connects them all).
        The name is resolved again whenever no connection is live or under way: its addresses may
        have changed since the last one was lost (a Service re-created, a new lease)."""
        if not any(sub.live() or sub.connecting() for sub in self._subchannels):
            async with self._resolving:  # one resolution for the calls that arrive together
                if not any(sub.live() or sub.connecting() for sub in self._subchannels):
                    await self._refresh()
        subchannels = self._subchannels
        now = asyncio.get_running_loop().time()
        live = [sub for sub in subchannels if sub.live()]
        if live:  # those not connected reconnect on their own, off the calls' path
            for sub in subchannels:
                if not sub.live() and sub.due(now):
                    sub.start()
            self._turn = (self._turn + 1) % len(live)
            connection = live[self._turn].connection
            assert connection is not None
            return connection
        # those under way or not refused lately (all of them if every one was)
        candidates = [sub for sub in subchannels if sub.connecting() or sub.due(now)] or subchannels
        try:
            return await eyeballs.first_of([sub.get for sub in candidates], 0.0)
        except eyeballs.AllFailed as failed:
            raise _unavailable(failed.errors) from None

    async def _refresh(self) -> None:
        """Subchannels for the addresses the name has now: those of addresses still there are kept,
        the others closed. A name that does not resolve keeps the addresses it had, as grpc-go keeps
        them on a resolver error, and so does a lookup that takes longer than _LOOKUP_WAIT (a DNS
        server that drops queries), which goes on for the next refresh; with no addresses yet, the
        call waits for it, and fails UNAVAILABLE saying why it did not resolve."""
        resolving = asyncio.ensure_future(self._resolve())
        try:
            if self._subchannels:
                await asyncio.wait({resolving}, timeout=_LOOKUP_WAIT)
                if not resolving.done():
                    return
            fresh = await resolving
        except GrpcStatusError:
            if not self._subchannels:
                raise
            return
        finally:
            resolving.add_done_callback(lambda done: done.cancelled() or done.exception())
        if self._closed:  # closed while the name was looked up: nothing may connect any more
            for sub in fresh:
                sub.close()
            raise GrpcStatusError(StatusCode.CANCELLED, "the channel was closed")
        old = {tuple(sub.addresses): sub for sub in self._subchannels}
        self._subchannels = [old.pop(tuple(sub.addresses), sub) for sub in fresh]
        for sub in old.values():
            sub.close()

    async def _resolve(self) -> list[_Subchannel]:
        """The target's addresses; through a proxy, the proxy's (the proxy resolves the target)."""
        settings = self.settings
        if settings.unix_path:  # nothing to resolve; the subchannel's one address is the socket
            return [_Subchannel(self, [(settings.unix_path, 0)], settings.unix_path)]
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


def _unavailable(errors: Sequence[Exception]) -> Exception:
    """What connects that all failed end a call with: UNAVAILABLE with each one's reason, unanswered
    when none was answered; an error that is no connect's failure as it came."""
    for error in errors:
        if not isinstance(error, GrpcStatusError):
            return error
    failures = [error for error in errors if isinstance(error, GrpcStatusError)]
    return GrpcStatusError(StatusCode.UNAVAILABLE, "; ".join(error.message for error in failures),
                           unanswered=all(error.unanswered is True for error in failures))


def _interleaved(addresses: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """IPv6 and IPv4 addresses taken in turn, the first address's family first (grpc-go's
    interleaveAddresses), so a family that drops SYNs delays the other by one step only."""
    families: dict[bool, list[tuple[str, int]]] = {}
    for address in addresses:
        families.setdefault(":" in address[0], []).append(address)
    groups = list(families.values())
    return [group[index] for index in range(max(map(len, groups), default=0)) for group in groups if index < len(group)]


def _outcome(call: Call) -> bytes:
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
            raise GrpcStatusError(code, f"unexpected HTTP status {call.http_status} without a gRPC status",
                                  http_status=call.http_status)
        raise GrpcStatusError(StatusCode.INTERNAL, "the server ended the call without a gRPC status")
    code = _status_code(status)
    if code != StatusCode.OK:
        message = unquote_to_bytes(dict(fields).get("grpc-message", b"")).decode("utf-8", "replace")
        raise GrpcStatusError(code, message, metadata, from_server=True)
    return _message(call, call.headers.get("grpc-encoding", b"identity").decode("latin-1").strip().lower())


def _status_code(value: bytes) -> StatusCode:
    """grpc-status as grpc-go reads it (Go's strconv.ParseInt, 32 bits: no spaces around it, no
    underscores, which Python's int() takes); GrpcStatusError UNKNOWN for one it cannot read, and
    UNKNOWN for a code beyond the known ones."""
    problem = None
    if not _STATUS.fullmatch(value):
        problem = "invalid syntax"
    elif len(value.lstrip(b"+-").lstrip(b"0")) > 10 or not -(1 << 31) <= int(value) < 1 << 31:
        problem = "value out of range"
    if problem is not None:
        raise GrpcStatusError(StatusCode.UNKNOWN, f"transport: malformed grpc-status: strconv.ParseInt: parsing "
                                                  f"{go_quoted(value)}: {problem}")
    try:
        return StatusCode(int(value) & 0xFFFFFFFF)
    except ValueError:
        return StatusCode.UNKNOWN


def _message(call: Call, encoding: str) -> bytes:
    data = bytes(call.data)
    if len(data) < PREFIX.size:
        raise GrpcStatusError(StatusCode.INTERNAL, "the server answered OK without a response message")
    flag, length = PREFIX.unpack_from(data)
    if len(data) != PREFIX.size + length:
        raise GrpcStatusError(StatusCode.INTERNAL, f"the response message has {len(data) - PREFIX.size} bytes, "
                                                   f"its prefix says {length}")
    message = data[PREFIX.size:]
    if not flag:
        return message
    if encoding in ("", "identity") or encoding not in ENCODINGS:
        raise GrpcStatusError(StatusCode.INTERNAL, f"a compressed response with grpc-encoding {encoding!r}")
    try:
        return codec.decompress(encoding, message, call.limit)
    except BadRequestError as exc:
        code = StatusCode.RESOURCE_EXHAUSTED if exc.status == 413 else StatusCode.INTERNAL
        raise GrpcStatusError(code, f"the response message: {exc}") from None


def _metadata_value(key: str, value: bytes) -> str | bytes:
    return unbase64(value) if key.endswith("-bin") else value.decode("latin-1")


def _left(scope: asyncio.Timeout, now: float) -> float | None:
    """Seconds a call's deadline leaves (None: no deadline)."""
    when = scope.when()
    return None if when is None else max(0.0, when - now)


def _timeout_header(seconds: float) -> bytes:
    """grpc-timeout: at most 8 digits, in the finest unit that holds them."""
    nanos = max(math.ceil(seconds * 1e9), 1)
    for unit, size in _TIMEOUT_UNITS:
        value = math.ceil(nanos / size)
        if value < 10**8:
            return f"{value}{unit}".encode()
    return b"99999999H"
