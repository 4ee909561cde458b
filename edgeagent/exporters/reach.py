"""Whether an upstream that could not be connected to accepts connections again.

Design note
===========
An exporter's backoff spaces its attempts out to spare an upstream that is struggling. When
nothing answered at all (connection refused, host unreachable, a name that does not resolve:
`RetryableError.unanswered`), there is nobody to spare, and waiting out a backoff of up to
`max_interval` × 1.5 after the link came back wastes a short connectivity window. So while
the attempts of an exporter fail unanswered, a `Watch` opens a plain TCP connection to the
upstream's host:port about once a second (jittered, one look at a time, bounded by
CONNECT_TIMEOUT) and closes it at once, without a byte sent. A name's addresses are raced as
the exporters dial them: the next starts 250 ms into a connect, so an address that drops SYNs
does not hide one that accepts. TLS and HTTP/2 are not spoken: the next real attempt does
that. When a connect succeeds the Link (edgeagent.exporters.link) lets the next attempt go at
once. Only the change from refused to accepted counts: a host that keeps accepting connections
while its requests still fail gets no more early attempts, and a port that flaps gets at most
one per backoff interval, so the upstream never sees more than its backoff allows.

This is grpc-go's split: a channel reconnects on its own connection backoff (1 s base, 120 s
at most) independently of the retry policy of the calls on it. Here the connect attempts are
kept at a steady ~1 s instead of growing: they cost one SYN, and a device on a link that
comes and goes wants to notice the link at once, whatever the length of the outage.

An upstream that answered (429, 502, 503, 504, a gRPC status) stops the watch: something
listens there, and its backoff (and any Retry-After) is kept. A send that timed out says
neither (`unanswered` is None); one connect after it (`Watch.accepts`) does: nothing
accepting means unanswered. Name lookups run on the resolver's threads: one that hangs is
waited for on the next look rather than started again.

The watch is a supervised task (runtime/supervise.py `Kept`): ended by anything but its
exporter (an error its body let out, a cancellation from elsewhere) it is counted in
`edgeagent_background_errors{task="reach:<exporter>"}`, logged, and started again after
WATCH_INTERVAL, so an upstream that comes back is still noticed within about a second.

An exporter that reaches its upstream through a proxy is watched at the proxy, where it
connects (`upstream_addresses`): a proxy that is up answers while the upstream behind it is
away (it refuses the tunnel, or answers 502), which stops the watch; one that is down is
watched until it accepts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from edgeagent import lookup as names
from edgeagent.http1 import eyeballs
from edgeagent.runtime import supervise
from edgeagent.signals import Signal

Address = tuple[str, int]
WATCH_INTERVAL = 1.0  # seconds between two connects, ±50 %
CONNECT_TIMEOUT = 1.0  # seconds; a connect that takes longer counts as not accepted
NEXT_ADDRESS_DELAY = 0.25  # seconds into a connect that the next address of the name starts too


@runtime_checkable
class Reachable(Protocol):
    """An exporter that connects to network addresses (otlp_http, otlp_grpc, kafka), or a connector
    whose levels' exporters do (failover)."""

    def upstream_addresses(self) -> list[Address]:
        """Where its requests connect: host and port of each endpoint or broker."""
        ...


def upstream_addresses(exporter: object) -> list[Address]:
    """Where an exporter connects; none for one that connects nowhere (debug)."""
    return exporter.upstream_addresses() if isinstance(exporter, Reachable) else []


@runtime_checkable
class RoutedBySignal(Protocol):
    """An exporter whose signals may go to different hosts (otlp_http's traces_endpoint, logs_endpoint)."""

    def signal_addresses(self, signal: Signal) -> list[Address]:
        """Where its requests of `signal` connect."""
        ...


def signal_addresses(exporter: object, signal: Signal) -> list[Address]:
    """Where an exporter's requests of one signal connect: all its addresses when it sends every
    signal to the same places."""
    return exporter.signal_addresses(signal) if isinstance(exporter, RoutedBySignal) else upstream_addresses(exporter)


class Watch:
    """Connects to `addresses` in turn, and calls `reached` when one accepts after none did.

    `reached` says whether it acted on it, and the loop time before which another accepted
    connect is of no use (the link takes the fast path once per backoff interval): until then
    the watch sleeps, and a connect it was not allowed to act on is tried again after that."""

    def __init__(self, addresses: Sequence[Address], reached: Callable[[], Awaitable[tuple[bool, float]]],
                 name: str, counting: supervise.Counting | None = None):
        self.addresses = list(dict.fromkeys(addresses))
        self.reached = reached
        self.name = name
        self._task = supervise.Kept(self._run, f"reach:{name}", {"exporter": name}, counting, WATCH_INTERVAL)
        self._closed = False
        self._connecting = asyncio.Lock()  # one connect at a time, whoever asks
        self._lookups: dict[Address, asyncio.Future[list[Any]]] = {}

    @property
    def running(self) -> bool:
        return self._task.running

    def start(self) -> None:
        if self.addresses and not self._closed:
            self._task.start()

    def stop(self) -> None:
        self._task.stop()

    def close(self) -> None:
        """Stop for good: a failure reported while shutting down starts no watch again."""
        self._closed = True
        self.stop()

    async def accepts(self) -> bool:
        """Whether one of the addresses accepts a TCP connection now; the connection is closed at once."""
        async with self._connecting:
            for address in self.addresses:
                if await self._accepts(address):
                    return True
            return False

    async def _accepts(self, address: Address) -> bool:
        ips = await self._resolved(address)
        attempts = [functools.partial(asyncio.open_connection, ip, address[1]) for ip in ips]
        with contextlib.suppress(TimeoutError, eyeballs.AllFailed):
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, writer = await eyeballs.first_of(attempts, NEXT_ADDRESS_DELAY, discard=_abort)
                writer.transport.abort()
                return True
        return False

    async def _resolved(self, address: Address) -> list[str]:
        """The IP addresses of `address`'s host; none while its lookup fails or hangs."""
        host = address[0]
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]
        lookup = self._lookups.get(address)
        if lookup is None or lookup.done():
            # a lookup that hangs is waited for again next time, not started again: one resolver
            # thread per address at most, whatever the resolver does
            lookup = asyncio.ensure_future(names.getaddrinfo(*address))
            lookup.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._lookups[address] = lookup
        await asyncio.wait({lookup}, timeout=CONNECT_TIMEOUT)
        if not lookup.done() or lookup.cancelled() or lookup.exception() is not None:
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in lookup.result()))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_look = 0.0
        accepting = False  # the watch starts after a connect failed: the change to accepted is news
        while True:
            await asyncio.sleep(max(WATCH_INTERVAL * random.uniform(0.5, 1.5), next_look - loop.time()))
            if not await self.accepts():
                accepting = False
            elif not accepting:
                accepting, next_look = await self.reached()


def _abort(streams: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """A connect that was accepted after another address's: closed unused."""
    streams[1].transport.abort()
