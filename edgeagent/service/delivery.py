"""What a pipeline's write to its queues waits for, besides the commit: room, and the export result.

* `sending_queue.block_on_overflow`: a queue that is full (its `queue_size`, or the storage's
  disk budget with `full_policy: block`) makes the request wait for room instead of being
  refused at once: it is written again after each commit that freed room, until it fits or its
  deadline passes (then the usual refusal: 503 + Retry-After / RESOURCE_EXHAUSTED). Only the
  queues that were full are written again. A request that could not fit in the empty queue
  (more items than an items-sized `queue_size`) is refused at once and for good by the queue
  itself (BadRequestError, 413), blocking or not.
* `sending_queue.wait_for_result`: the record is committed as always (durable first), then the
  answer waits for its delivery (edgeagent.queue.watch): OK once the upstream accepted it, the
  upstream's PermanentError when it refused it for good (dead-lettered), the chain's
  RetryableError when the retries ran out. A client that gives up (its gRPC deadline, or the HTTP
  receiver's `write_timeout`, passes) or is answered with an error owns its request again: the
  record leaves the queue unless it is being sent.
* The deadline is the payload's (`Payload.deadline`, set by the receiver: HTTP's write_timeout,
  gRPC's grpc-timeout). Without one, both waits last until the outcome, as otelcol's do, or
  until the agent stops (ShutdownError).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Collection
from dataclasses import dataclass
from typing import TypeVar

from edgeagent.errors import PermanentError, QueueFullError, RetryableError
from edgeagent.queue.arrivals import Arrival
from edgeagent.queue.reader import DurableQueue
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

T = TypeVar("T")


@dataclass(frozen=True)
class Waits:
    """The queues of a pipeline whose exporters set block_on_overflow or wait_for_result."""

    blocking: frozenset[DurableQueue] = frozenset()
    watched: frozenset[DurableQueue] = frozenset()


async def write(store: QueueStore, queues: list[DurableQueue], waits: Waits, body: bytes, items: int,
                signal: Signal, batch_key: bytes, attributes: bytes,
                deadline: float | None, arrival: Arrival | None = None) -> list[asyncio.Future[None]]:
    """Commit the request to `queues` of one store; returns the outcomes of the watched records.
    `arrival` (queue/arrivals.py) ends at the first attempt's put; a retry after waiting for room is
    a put the writer was not told to expect."""
    loop = asyncio.get_running_loop()
    pending = list(queues)
    outcomes: list[asyncio.Future[None]] = []
    created: list[asyncio.Future[None]] = []
    try:
        while True:
            seen = store.room.freed
            mine = {queue: loop.create_future() for queue in pending if queue in waits.watched}
            created += mine.values()
            futures = store.put_each(pending, body, items, signal, batch_key, attributes, mine, waits.blocking, arrival)
            results = await asyncio.gather(*futures, return_exceptions=True)
            full = []
            for queue, result in zip(pending, results, strict=True):
                if result is None:
                    if queue in mine:
                        outcomes.append(mine[queue])
                elif isinstance(result, QueueFullError) and queue in waits.blocking:
                    full.append(queue)
                elif isinstance(result, BaseException):
                    _count_refusals(store, waits, [queue for queue, result in zip(pending, results, strict=True)
                                                   if isinstance(result, QueueFullError)], items)
                    raise result
            if not full:
                return outcomes
            pending = full
            try:
                await _within(deadline, store.room.wait(seen),
                              QueueFullError(f"queue {full[0].name} stayed full until the request's deadline",
                                             retry_after=5.0))
            except (QueueFullError, asyncio.CancelledError):  # the deadline passed while waiting: refused
                _count_refusals(store, waits, full, items)
                raise
    except BaseException:
        for outcome in created:  # the client gets an error: records it waited for are its own again
            outcome.cancel()
        raise


async def results(outcomes: Collection[asyncio.Future[None]], deadline: float | None) -> None:
    """Wait for the delivery of watched records; raise what the first failed one met."""
    settled = await _within(deadline, asyncio.gather(*outcomes, return_exceptions=True), RetryableError(
        "the upstream did not confirm delivery before the request's deadline", retry_after=1.0))
    errors = [outcome for outcome in settled if isinstance(outcome, BaseException)]
    permanent = [error for error in errors if isinstance(error, PermanentError)]
    if permanent or errors:
        raise (permanent or errors)[0]


def _count_refusals(store: QueueStore, waits: Waits, refused: list[DurableQueue], items: int) -> None:
    """otelcol_exporter_enqueue_failed for blocking queues, whose refusals the writer left uncounted."""
    def count(queue: DurableQueue) -> None:  # on the writer thread, which owns the count
        queue.refused_items += items
    for queue in refused:
        if queue in waits.blocking:
            store.call(functools.partial(count, queue))


async def _within(deadline: float | None, waiting: Awaitable[T], late: Exception) -> T:
    """Await `waiting`, raising `late` (and cancelling it) when the loop clock reaches `deadline`."""
    if deadline is None:
        return await waiting
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(max(remaining, 0)):
            return await waiting
    except TimeoutError:
        raise late from None
