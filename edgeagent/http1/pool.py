"""The connections of an HTTP/1.1 client, kept for reuse as Go's http.Transport keeps them.

- A request takes a slot before it takes a connection: at most `limit` requests in flight in
  all and `limit_per_route` to one route (0: no limit); one beyond waits for a slot to free.
- With keep-alive on, a connection whose exchange ended cleanly goes back to its route's idle
  list; the most recently used is taken first. An idle connection closes after `idle_timeout`
  (None: never). `max_idle_per_route` refuses a connection released beyond it (it is closed)
  and `max_idle` closes the least recently used beyond it, in all (0: no cap).
- An idle connection the server closed, or that holds bytes nobody asked for, is found out
  when released or taken (its reader at EOF or holding bytes, its transport closing) and
  closed instead of used.
- `drop_idle` closes the idle connections to a route that were released before a given time:
  the client's, when a request there got not a byte of an answer within its timeout.
- A connection released with `reset` (a request given up before its answer) is reset, not
  closed: the kernel drops the bytes of the request it still holds, which would otherwise go on
  over the link after the close and, all there, have the server take a request given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edgeagent.http1 import wire


@dataclass(frozen=True)
class Route:
    """Where a connection goes: the pool keeps connections apart by it."""
    scheme: str  # of the target: "http" or "https"
    host: str
    port: int
    ssl: ssl.SSLContext | None = None  # for an https target and an https proxy
    server_hostname: str = ""  # the name verified and sent as SNI; "" is `host`
    proxy: str = ""  # the proxy URL the connection goes through, "" for none

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class PoolSettings:
    """How many connections the client keeps, in flight and idle, in all and per route."""

    limit: int = 0  # requests in flight in all; 0: no limit
    limit_per_route: int = 0  # requests in flight to one route; 0: no limit
    keepalive: bool = True
    idle_timeout: float | None = 15.0  # None: idle connections stay open
    max_idle: int = 0  # idle connections kept in all; 0: no cap
    max_idle_per_route: int = 0  # idle connections kept per route; 0: no cap


class Connection:
    """One connection: its streams, and whether it has carried an exchange before."""

    def __init__(self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.route = route
        self.reader = reader
        self.writer = writer
        self.reused = False
        self.idle_since = 0.0
        self.expiry: asyncio.TimerHandle | None = None

    def stale(self) -> bool:
        """The server closed it, it failed, or bytes came that no request asked for (Go's "unsolicited
        response on idle channel"): read as the next request's answer, they would be a verdict on a
        request the server never judged."""
        reader = self.reader
        return self.writer.transport.is_closing() or reader.at_eof() or reader.exception() is not None \
            or bool(wire.unread(reader))

    def unsent(self) -> int:
        """The bytes written that the kernel has not taken yet: the transport's, and with TLS the
        buffer of the transport beneath it (asyncio's TLS transport hands everything down at once)."""
        transport: asyncio.BaseTransport | None = self.writer.transport
        unsent = 0
        while isinstance(transport, asyncio.WriteTransport):
            unsent += transport.get_write_buffer_size()
            transport = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)  # no public way down
        return unsent

    def close(self, reset: bool = False) -> None:
        """Closes the connection; at once when bytes written are still unsent (a request the server
        stopped reading), where closing would wait for the server to read them. With `reset`, the
        bytes the kernel holds are dropped too (SO_LINGER 0: a reset, not a FIN after them)."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if reset:
            sock = self.writer.get_extra_info("socket")  # (with TLS too: the socket beneath)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if reset or self.unsent():
            self.writer.transport.abort()
        else:
            self.writer.close()


class Pool:
    """Slots and idle connections; `open` makes a new connection for a route."""

    def __init__(self, settings: PoolSettings, open: Callable[[Route, float | None], Awaitable[Connection]]):
        self.settings = settings
        self._open = open
        self._idle: dict[Route, list[Connection]] = {}  # oldest first
        self._busy: dict[Route, int] = {}
        self._busy_total = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def idle_connections(self) -> list[Connection]:
        return [connection for idle in self._idle.values() for connection in idle]

    async def acquire(self, route: Route, *, fresh: bool = False, deadline: float | None = None) -> Connection:
        """A connection to `route`, idle or new (always new with `fresh`), once a slot is free;
        `deadline` is the request's, for opening one."""
        await self._slot(route)
        try:
            connection = None if fresh else self._take_idle(route)
            return connection if connection is not None else await self._open(route, deadline)
        except BaseException:
            self._free(route)
            raise

    def release(self, connection: Connection, *, reusable: bool, reset: bool = False) -> None:
        """Gives the slot back; the connection is kept idle when it may carry another exchange, and
        reset (`Connection.close`) with `reset`."""
        self._free(connection.route)
        if reset or not reusable or self._closed or not self.settings.keepalive or connection.stale():
            connection.close(reset)
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        idle = self._idle.setdefault(connection.route, [])
        idle.append(connection)
        if self.settings.idle_timeout is not None:
            connection.expiry = loop.call_later(self.settings.idle_timeout, self._expire, connection)
        if self.settings.max_idle_per_route and len(idle) > self.settings.max_idle_per_route:
            self._drop(idle.pop())  # Go refuses the connection just released
        while self.settings.max_idle and self.idle_count() > self.settings.max_idle:
            oldest = min(self._idle.values(), key=lambda held: held[0].idle_since)  # Go evicts the least recently used
            self._drop(oldest[0])

    def drop_idle(self, route: Route, *, before: float) -> None:
        """Closes the idle connections to `route` released before `before` (loop time)."""
        for connection in [held for held in self._idle.get(route, []) if held.idle_since < before]:
            self._drop(connection)

    def close(self) -> None:
        """Closes the idle connections; those in use close when released."""
        self._closed = True
        for connection in self.idle_connections():
            self._drop(connection)

    async def _slot(self, route: Route) -> None:
        while not self._has_room(route):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._busy[route] = self._busy.get(route, 0) + 1
        self._busy_total += 1

    def _has_room(self, route: Route) -> bool:
        limit, per_route = self.settings.limit, self.settings.limit_per_route
        return (not limit or self._busy_total < limit) and (not per_route or self._busy.get(route, 0) < per_route)

    def _free(self, route: Route) -> None:
        self._busy_total -= 1
        if self._busy[route] == 1:
            del self._busy[route]
        else:
            self._busy[route] -= 1
        for waiter in self._waiters:  # each checks its own route's room again
            if not waiter.done():
                waiter.set_result(None)

    def _take_idle(self, route: Route) -> Connection | None:
        idle = self._idle.get(route)
        while idle:
            connection = idle.pop()
            if not idle:
                del self._idle[route]
            if connection.expiry is not None:
                connection.expiry.cancel()
                connection.expiry = None
            if connection.stale():
                connection.close()
            else:
                connection.reused = True
                return connection
            idle = self._idle.get(route)
        return None

    def _expire(self, connection: Connection) -> None:
        connection.expiry = None
        self._drop(connection)

    def _drop(self, connection: Connection) -> None:
        """Closes an idle connection and forgets it."""
        idle = self._idle.get(connection.route, [])
        if connection in idle:
            idle.remove(connection)
            if not idle:
                del self._idle[connection.route]
        connection.close()
