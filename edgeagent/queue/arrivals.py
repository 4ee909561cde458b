"""Requests on their way to a queue store: what lets group commit wait only for a put that is coming.

A receiver's request is *arriving* at a store from its admission (its headers read, its body
about to be read and decoded) until its put to that store is queued for the writer, or until
the request ends without one (refused, undecodable, dropped by a processor). The consumer that
admits it counts it (`Arrival`) at every store its pipelines write to directly; a pipeline
that hands requests to a stage (tail_sampling) does not count, as its stage commits on its own
terms. The writer reads the count (`Arrivals.count`) while it holds puts: while it is above
zero another put is coming and the commit may wait for it. At zero, only clients answered a
moment ago may still be coming (grouping.py): their next requests are on the wire or in the
socket buffers, where no receiver sees them yet.

The event loop owns the count; the writer thread only reads it, a single int. A request that
leaves without a put while the writer waits wakes it (`Arrivals.wake`), so a refusal never
holds a commit back until the linger's cap.

A request whose whole body is already in the loop's buffers is admitted, decoded and put in
one step of its task, so it would count for an instant only, while the writer waits for the
GIL. Puts therefore reach the writer at the end of the loop's batch of ready callbacks
(`Handover`): the requests whose bytes came in with the first one's have been handled by then,
put or counted, and the writer sees them together. When the loop has nothing else ready that
costs one pass of the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from edgeagent.queue.ops import WriterOp


class Arrivals:
    """The number of requests on their way to one store (owned by the event loop)."""

    def __init__(self, wake: Callable[[], None] = lambda: None):
        self.count = 0
        self.wake = wake  # called when the count falls to zero without a put

    def left(self, with_put: bool) -> None:
        self.count -= 1
        if not with_put and self.count == 0:
            self.wake()


class Arrival:
    """One request, counted at every store it may put into until its put there is queued."""

    def __init__(self, stores: Iterable[Arrivals]):
        self._pending = list(stores)
        for arrivals in self._pending:
            arrivals.count += 1

    def put_queued(self, arrivals: Arrivals) -> None:
        """Its put to that store is queued: the writer sees it now (call after queuing, never before)."""
        if arrivals in self._pending:
            self._pending.remove(arrivals)
            arrivals.left(with_put=True)

    def settle(self) -> None:
        """The request is over: it stops counting wherever its put never came. Idempotent."""
        pending, self._pending = self._pending, []
        for arrivals in pending:
            arrivals.left(with_put=False)


class Handover:
    """Hands puts to the writer once per pass of the event loop, then ends their arrivals."""

    def __init__(self, send: Callable[[WriterOp], None], arrivals: Arrivals):
        self._send = send
        self._arrivals = arrivals
        self._ops: list[WriterOp] = []
        self._arrived: list[Arrival] = []
        self._scheduled = False

    def put(self, loop: asyncio.AbstractEventLoop, ops: list[WriterOp], arrival: Arrival | None) -> None:
        self._ops += ops
        if arrival is not None:
            self._arrived.append(arrival)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.flush)  # after the callbacks that are ready now

    def flush(self) -> None:
        """Send what was put (idempotent); the arrivals end after, never before, the writer can see the puts."""
        ops, arrived = self._ops, self._arrived
        self._ops, self._arrived, self._scheduled = [], [], False
        for op in ops:
            self._send(op)
        for arrival in arrived:
            arrival.put_queued(self._arrivals)
