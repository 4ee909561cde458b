"""What the senders of one exporter know about the path to its upstream.

Edge links drop for seconds or days. Ten consumers each retrying on their own would hammer a
dead link and then stampede a link that has just come back. So every send attempt of an
exporter to one upstream passes through one `Link` (signals an exporter sends to hosts of their
own, as otlp_http's logs_endpoint on another backend, have one each: service/graph.py):

* **online**: up to `max_concurrency` attempts at a time.
* **offline** after OFFLINE_AFTER consecutive connection-level failures (refused, reset,
  timed out, a proxy's 502/504): one attempt at a time (the probe), spaced by the exporter's
  backoff; every other consumer waits with its lease.
* **coming back**: the first success brings the link online with two attempts at a time, and
  each further success doubles that up to `max_concurrency`, so a returning link sees a ramp,
  not a storm.
* A `Retry-After` (or gRPC RetryInfo) from the upstream pauses every consumer of the exporter
  until that time, not only the one that was told.
* **back at once**: while attempts fail without any answer (refused, unreachable: the error's
  `unanswered`), a Watch (edgeagent.exporters.reach) connects to the upstream's host:port
  about once a second. When it is accepted, the probe's backoff is cut short and every
  backoff wait of the exporter's consumers (`pause`) ends, so draining starts within about a
  second of the upstream listening. That fast path is taken when the upstream goes from
  refusing to accepting, at most once per backoff interval: a host that accepts connections
  but fails requests is tried no faster than its backoff allows. An answer of any kind
  (success, 503, a proxy's 502) stops the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from edgeagent.configretry import RetryConfig, backoff_delay, backoff_interval
from edgeagent.errors import RetryableError, ShutdownError
from edgeagent.exporters.reach import Address, Watch
from edgeagent.runtime import supervise

log = logging.getLogger(__name__)

OFFLINE_AFTER = 3


class Link:
    def __init__(self, max_concurrency: int, retry: RetryConfig, on_change: Callable[[bool], None],
                 addresses: Sequence[Address] = (), name: str = "", counting: supervise.Counting | None = None):
        self.max_concurrency = max(1, max_concurrency)
        self.retry = retry
        self.on_change = on_change
        self.online: bool | None = None  # None until the first attempt settles
        self.allowed = self.max_concurrency
        self.active = 0
        self.failures = 0  # consecutive connection-level failures
        self.probes = 0  # failed probes since the link went offline
        self.not_before = 0.0  # loop time before which nobody sends
        self.retry_until = 0.0  # loop time the upstream's last Retry-After asked to wait for
        self.fast_after = 0.0  # loop time before which the watch may not cut a backoff short again
        self.generation = 0  # times the upstream was found back (the watch, or a success after offline)
        self.name = name
        self._changed = asyncio.Condition()
        self._woken = asyncio.Event()  # set (and replaced) when the watch finds the upstream back
        self._watch = Watch(addresses, self._reached, name, counting)

    @contextlib.asynccontextmanager
    async def attempt(self, stopping: asyncio.Event | None = None, *,
                      unkept: bool = False) -> AsyncIterator[None]:
        """Wait for permission to send, then hold one of the allowed slots while sending.

        Once `stopping` is set no attempt begins: ShutdownError (the caller keeps its data), and a
        wait for a turn ends when `interrupt` is called, as a backoff wait ends then. Only one whose
        caller cannot keep its data (`unkept`) and whose turn is there without a wait still goes."""
        loop = asyncio.get_running_loop()
        waited = False
        async with self._changed:
            while True:
                wait = self.not_before - loop.time()
                turn = wait <= 0 and self.active < self.allowed
                if stopping is not None and stopping.is_set() and (waited or not turn or not unkept):
                    raise ShutdownError("the agent is shutting down; the data stays queued")
                if turn:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait if wait > 0 else None)
                waited = True
            self.active += 1
        try:
            yield
        finally:
            async with self._changed:
                self.active -= 1
                self._changed.notify_all()

    async def pause(self, delay: float, stopping: asyncio.Event, since: int | None = None) -> None:
        """Wait `delay` seconds, less when `stopping` is set or the upstream is found back. `since`:
        the `generation` when the failed attempt began; found back since then, no wait at all (a
        refusal that raced the upstream's return must not cost a whole backoff)."""
        if since is not None and since != self.generation:
            return
        waits = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(self._woken.wait())]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def close(self) -> None:
        """Stop watching the upstream for good (idempotent)."""
        self._watch.close()

    async def interrupt(self) -> None:
        """Have every attempt waiting for its turn look at its `stopping` event again."""
        async with self._changed:
            self._changed.notify_all()

    async def succeeded(self) -> None:
        self._watch.stop()
        back = self.online is False
        async with self._changed:
            self.failures = 0
            self.probes = 0
            if back:
                self.allowed = min(2, self.max_concurrency)
            elif self.allowed < self.max_concurrency:
                self.allowed = min(self.max_concurrency, self.allowed * 2)
            self._set(True)
            self._changed.notify_all()
        if back:  # the other consumers' backoff waits end: the ramp (allowed) paces them
            self._wake()

    async def failed(self, error: RetryableError) -> None:
        loop = asyncio.get_running_loop()
        unanswered = error.unanswered
        if unanswered is None:  # timed out: nothing there, or an upstream that hangs? one connect tells
            unanswered = bool(self._watch.addresses) and not await self._watch.accepts()
        if unanswered:
            self._watch.start()
        else:
            self._watch.stop()
        async with self._changed:
            if error.connection:
                self.failures += 1
                if self.online is False:
                    self.probes += 1
                    self.not_before = max(self.not_before, loop.time() + backoff_delay(self.retry, self.probes))
                elif self.failures >= OFFLINE_AFTER:
                    self.allowed = 1
                    self.probes = 0
                    self._set(False)
            else:  # the upstream answered: the link works, the server is busy
                self.failures = 0
                if self.online is None:
                    self._set(True)
            if error.retry_after is not None:
                self.retry_until = max(self.retry_until, loop.time() + error.retry_after)
                self.not_before = max(self.not_before, self.retry_until)
            self._changed.notify_all()

    async def _reached(self) -> tuple[bool, float]:
        """The watch connected after it could not: send now, unless the fast path was taken within
        the last backoff interval. Returns whether it was taken, and the loop time before which
        the watch need not look again."""
        now = asyncio.get_running_loop().time()
        if now < self.fast_after:
            return False, self.fast_after
        self.fast_after = now + backoff_interval(self.retry, max(self.probes, 1))
        log.debug("upstream accepts connections again; sending now instead of after the backoff",
                  extra={"exporter": self.name})
        async with self._changed:
            self.not_before = self.retry_until
            self._changed.notify_all()
        self._wake()
        return True, self.fast_after

    def _wake(self) -> None:
        """The upstream is back: end every backoff wait, and those about to begin (`generation`)."""
        self.generation += 1
        woken, self._woken = self._woken, asyncio.Event()
        woken.set()

    def _set(self, online: bool) -> None:
        if self.online != online:
            self.online = online
            self.on_change(online)
