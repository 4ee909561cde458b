"""The sender: drains one durable queue into one exporter (the collector's exporterhelper).

Design note
===========
* A sender owns `num_consumers` consumer tasks for one (exporter, signal) queue. Each
  consumer leases the oldest records, merges them into one request (batch settings) and
  hands it to the export chain (edgeagent.exporters.chain: timeout, retry with backoff,
  split on 413, dead letters, metrics). Then it acks (delivered), or the chain has moved
  what the upstream refused for good to the dead-letter store with the upstream's answer,
  or it releases the lease (retries ran out, or shutdown).
* Nothing is dropped when `retry_on_failure.max_elapsed_time` runs out: the records go back
  to the queue and are sent again after a pause. otelcol drops them; an edge agent must not.
* Batching happens here, after the durable commit: one consumer at a time gathers a batch,
  waiting until `send_batch_size` items are queued or `timeout` has passed since it started
  waiting. Requests larger than `send_batch_max_size` are split.
* No consumer dies on one lease: an unexpected exception is logged (once until a delivery
  succeeds again), counted in `edgeagent_exporter_unexpected_errors`, shown in health as the
  exporter's problem; the lease goes back to the queue and the consumer pauses, then goes on.
* Shutdown stops the chain's backoff waits and cancels the consumers; a cancelled consumer
  releases its lease, so in-flight data stays queued for the next run.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from google.protobuf.message import DecodeError
from pydantic import Field

from edgeagent.component import ComponentConfig
from edgeagent.errors import RetryableError, ShutdownError
from edgeagent.exporters.chain import ExportChain, Exporter, Part, Telemetry
from edgeagent.exporters.link import Link
from edgeagent.exporters.retry import RetryConfig
from edgeagent.queue.api import ConsumerQueue
from edgeagent.queue.api import QueueLease as Lease
from edgeagent.queue.limits import QueueCapacity
from edgeagent.signals import Signal, count_items, merge_requests, split_request

log = logging.getLogger(__name__)


class QueueConfig(ComponentConfig):
    enabled: bool = True
    num_consumers: int = Field(10, ge=1)
    queue_size: int = Field(1000, ge=1)
    sizer: Literal["requests", "items", "bytes"] = "requests"
    storage: str | None = None
    # edgeagent: after a long outage, newest_first sends current data before the backfill
    drain_order: Literal["oldest_first", "newest_first"] = "oldest_first"

    def capacity(self) -> QueueCapacity:
        return QueueCapacity(self.queue_size, self.sizer)


@dataclass
class BatchSettings:
    timeout: float
    send_batch_size: int
    send_batch_max_size: int


class SenderHost(Telemetry, Protocol):
    """What a sender asks of the agent beyond the chain's telemetry."""

    def component_failed(self, path: str, message: str) -> None: ...


class Sender:
    def __init__(self, exporter: Exporter, queue: ConsumerQueue, retry: RetryConfig, num_consumers: int,
                 batch: BatchSettings | None, telemetry: SenderHost, link: Link | None = None,
                 newest_first: bool = False, timeout: float | None = None):
        self.exporter = exporter
        self.queue = queue
        self.signal: Signal = queue.signal
        self.retry = retry
        self.num_consumers = num_consumers
        self.batch = batch
        self.telemetry = telemetry
        self.link = link or Link(num_consumers, retry, lambda online: telemetry.upstream_state(exporter.id, online))
        self.chain = ExportChain(exporter, self.signal, telemetry, timeout=timeout, retry=retry, link=self.link,
                                 drains_queue=True)
        self.newest_first = newest_first
        self._tasks: list[asyncio.Task[None]] = []
        self._delivering: set[asyncio.Task[None]] = set()  # consumers between lease and settlement
        self._closing = False
        self._gather_lock = asyncio.Lock()
        self._troubled = False  # an unexpected error was logged and no delivery succeeded since

    async def start(self) -> None:
        for index in range(self.num_consumers):
            task = asyncio.create_task(self._consume(), name=f"sender:{self.exporter.id}:{self.signal.label}:{index}")
            task.add_done_callback(self._consumer_done)
            self._tasks.append(task)

    async def shutdown(self, grace: float = 3.0) -> None:
        """Stop leasing; let deliveries under way settle for up to `grace` seconds, then cancel them.

        A backoff wait ends at once (the data stays queued). A delivery cancelled mid-send returns
        its lease, so the upstream may get that batch twice; the grace period keeps that to
        deliveries that hang (stop and reload, not only crashes)."""
        self.chain.stop()
        tasks, self._tasks = self._tasks, []
        self._closing = True
        busy = [task for task in tasks if task in self._delivering]
        for task in tasks:
            if task not in self._delivering:
                task.cancel()
        if busy and grace > 0:
            await asyncio.wait(busy, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("sender consumer stopped unexpectedly", exc_info=task.exception(),
                      extra={"exporter": self.exporter.id, "signal": self.signal.label})
            self.telemetry.component_failed(f"exporters::{self.exporter.id}", str(task.exception()))

    async def _consume(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        while not self._closing:
            lease = None
            try:
                lease = await self._next_lease()
                if lease is None:
                    continue
                self._delivering.add(current)
                pause = await self._deliver(lease)
            except asyncio.CancelledError:
                if lease is not None and not lease.done:
                    self.queue.release(lease)
                raise
            except Exception as exc:  # noqa: BLE001 - a bug or a surprise must not stop the consumer
                pause = self._unexpected(lease, exc)
            finally:
                self._delivering.discard(current)
            if pause and not self._closing:
                await asyncio.sleep(pause)

    def _unexpected(self, lease: Lease | None, error: Exception) -> float:
        """Keep the lease's data queued, say so once, and pause before the next lease."""
        if lease is not None and not lease.done:
            self.queue.release(lease, attempts=lease.attempts + 1)
        self.telemetry.count("edgeagent_exporter_unexpected_errors", 1, self.exporter.id)
        self.telemetry.exporter_problem(self.exporter.id, f"unexpected error while sending: {error!r}")
        if not self._troubled:
            self._troubled = True
            log.error("sending failed unexpectedly; the data stays queued and is tried again after a pause",
                      exc_info=error, extra={"exporter": self.exporter.id, "signal": self.signal.label})
        return self.retry.max_interval

    async def _next_lease(self) -> Lease | None:
        await self.queue.wait_available()
        if self.batch is None:
            return await self.queue.lease(max_items=1 << 62, max_entries=1, newest_first=self.newest_first)
        async with self._gather_lock:
            await self.queue.wait_available()
            if self.batch.send_batch_size and self.batch.timeout > 0:
                deadline = asyncio.get_running_loop().time() + self.batch.timeout
                await self.queue.wait_items(self.batch.send_batch_size, deadline)
            limit = self.batch.send_batch_max_size or self.batch.send_batch_size or (1 << 62)
            return await self.queue.lease(max_items=limit, newest_first=self.newest_first)

    async def _deliver(self, lease: Lease) -> float:
        """Send one lease and settle it; returns how long this consumer should pause."""
        try:
            await self.chain.export(self._requests(lease), _LeaseDeadLetters(self.queue, lease))
        except ShutdownError:
            self.queue.release(lease)
            return 0.0
        except RetryableError as exc:
            self.queue.release(lease, attempts=lease.attempts + 1)
            log.warning("upstream still failing after retries; data stays queued and will be sent again",
                        extra={"exporter": self.exporter.id, "signal": self.signal.label, "items": lease.items,
                               "error": str(exc)})
            return self.retry.max_interval
        if not lease.done:  # not dead-lettered
            self.queue.ack(lease).add_done_callback(self._ack_done)
        self._troubled = False
        return 0.0

    def _ack_done(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("acknowledging delivered data failed; it will be delivered again",
                      exc_info=future.exception(), extra={"queue": self.queue.name})

    def _requests(self, lease: Lease) -> list[Part]:
        try:
            return self._batches(lease)
        except DecodeError:  # a record damaged on disk: it must not stop this consumer
            self._quarantine_unparsable(lease)
            return self._batches(lease) if lease.bodies else []

    def _batches(self, lease: Lease) -> list[Part]:
        body = merge_requests(self.signal, lease.bodies)
        max_items = self.batch.send_batch_max_size if self.batch else 0
        if not max_items or lease.items <= max_items:
            return [(body, lease.items)]
        request = self.signal.request_class.FromString(body)
        return [(part.SerializeToString(), count_items(self.signal, part))
                for part in split_request(self.signal, request, max_items)]

    def _quarantine_unparsable(self, lease: Lease) -> None:
        """A record whose request does not parse (damaged on disk) leaves the lease for the dead-letter
        store; the rest of the lease is sent as usual."""
        bad = []
        for index, body in enumerate(lease.bodies):
            try:
                self.signal.request_class.FromString(body)
            except DecodeError:
                bad.append(index)
        self.queue.quarantine(lease, bad, f"not a valid {self.signal.label} request")


@dataclass
class _LeaseDeadLetters:
    """The dead-letter sink of one lease: the refused requests replace the lease's records."""

    queue: ConsumerQueue
    lease: Lease

    async def dead_letter(self, refused: list[Part], description: dict[str, Any]) -> None:
        lease = self.lease
        whole = len(refused) == 1 and refused[0][1] == lease.items
        # a request refused as a whole keeps its queue records; parts of a split one are stored as sent
        await self.queue.dead_letter(lease, description, bodies=None if whole else refused)
