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
  waiting. Requests larger than `send_batch_max_size` are split. The settings are the
  exporter's own `sending_queue::batch` (flush_timeout, min_size, max_size) when it has one,
  else the pipeline's batch processor's. `flush()` (a drain before a stop) ends that wait: from
  then on what is queued goes out at once.
* Without a size trigger (`send_batch_size` / `min_size` 0, or a batch processor `timeout` of 0)
  each queued request goes out on its own, split by the max size, never merged: otelcol's batch
  processor starts no timer then and sends each request as it comes, and the exporter batcher
  with min_size 0 flushes each at once (queuebatch.partitionBatcher.consumeInternal). A backlog
  is never merged into one giant request.
* A merged request holds at most MERGED_REQUEST_BYTES of queued requests (unless its first alone
  is larger), whatever the item counts allow: a consumer's memory stays bounded, and the request
  fits an otelcol gRPC receiver's default 4 MiB message limit.
* No consumer dies on one lease: an unexpected exception is logged (once until a delivery
  succeeds again), counted in `edgeagent_exporter_unexpected_errors`, shown in health as the
  exporter's problem; the lease goes back to the queue and the consumer pauses, then goes on.
* A lease sent as several requests (`send_batch_max_size`, or halves after a 413) whose later
  request fails after earlier ones were delivered: only what was not delivered goes back to the
  queue, in place of the lease's records in one commit (queue.requeue), so the upstream does not
  get the delivered requests again. A crash between the upstream's answer and that commit still
  means they are sent again, as for any data in flight.
* Shutdown stops the chain's backoff waits and the waits for a turn to send (an offline link's
  next probe), and cancels the consumers; a cancelled consumer releases its lease, so in-flight
  data stays queued for the next run. Only attempts under way get the grace period: an upstream
  that is down costs a stop no time, and no attempt starts once it has begun.
* wait_for_result (edgeagent.queue.watch): a lease whose retries ran out is released with the
  error, so the records clients wait for go back to them; a lease whose every client gave up is
  no longer sent (as otelcol cancels an export whose caller went away) and goes back the same way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from google.protobuf.message import DecodeError
from pydantic import Field, field_validator, model_validator

from edgeagent.component import ComponentConfig, null_keeps_defaults
from edgeagent.config.types import Duration
from edgeagent.configretry import RetryConfig
from edgeagent.errors import RetryableError, ShutdownError
from edgeagent.exporters.chain import ExportChain, Exporter, Part, Telemetry
from edgeagent.exporters.link import Link
from edgeagent.exporters.reach import upstream_addresses
from edgeagent.queue.api import ConsumerQueue
from edgeagent.queue.api import QueueLease as Lease
from edgeagent.queue.limits import QueueCapacity
from edgeagent.signals import Signal, merge_requests, split_serialized

_CUT_ON_LOOP_BYTES = 256 << 10  # larger bodies are cut into send_batch_max_size parts on a thread
MERGED_REQUEST_BYTES = 4 << 20  # of queued requests merged into one upstream request
log = logging.getLogger(__name__)


@dataclass
class BatchSettings:
    """When, and how much, a sender batches what it reads from its queue (the batch processor's settings,
    or sending_queue::batch)."""

    timeout: float
    send_batch_size: int
    send_batch_max_size: int


class PartitionConfig(ComponentConfig):
    metadata_keys: list[str] = Field(default_factory=list)
    cache_size: int = Field(default=10000, gt=0)
    idle_timeout: Duration = Field(default=90.0, gt=0)

    @field_validator("metadata_keys")
    @classmethod
    def _no_partitions(cls, value: list[str]) -> list[str]:
        if value:  # records are leased in queue order; a partition key would need its own queue
            raise ValueError("metadata_keys: the durable queue leases records in order and cannot partition "
                             "batches by metadata; use the batch processor's metadata_keys in the pipeline")
        return value


class QueueBatchConfig(ComponentConfig):
    """otelcol 0.165's exporter-side batching: the sender's batch settings for this exporter."""

    flush_timeout: Duration = 0.2
    sizer: Literal["items", "bytes"] | None = None  # None: the queue's sizer when set there, else items
    min_size: int = Field(8192, ge=0)
    max_size: int = Field(0, ge=0)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)

    _null_partition = null_keeps_defaults("partition")

    @model_validator(mode="after")
    def _check(self) -> QueueBatchConfig:
        if self.flush_timeout <= 0:
            raise ValueError("flush_timeout must be positive (e.g. 200ms)")
        if self.max_size and self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) must be 0 or at least min_size ({self.min_size})")
        return self

    def settings(self) -> BatchSettings:
        return BatchSettings(self.flush_timeout, self.min_size, self.max_size)


class QueueConfig(ComponentConfig):
    enabled: bool = True
    num_consumers: int = Field(10, ge=1)
    queue_size: int = Field(1000, ge=1)
    sizer: Literal["requests", "items", "bytes"] = "requests"
    storage: str | None = None
    block_on_overflow: bool = False
    wait_for_result: bool = False
    batch: QueueBatchConfig | None = None
    # edgeagent: after a long outage, newest_first sends current data before the backfill
    drain_order: Literal["oldest_first", "newest_first"] = "oldest_first"

    @model_validator(mode="before")
    @classmethod
    def _batch_key_enables(cls, data: Any) -> Any:
        """As otelcol: a `batch:` key alone enables the defaults; `enabled: false` turns it off."""
        if not isinstance(data, dict) or "batch" not in data:
            return data
        batch = data["batch"]
        if batch is None:
            batch = {}
        elif isinstance(batch, dict) and "enabled" in batch:
            batch = dict(batch)
            if not batch.pop("enabled"):
                batch = None
        return {**data, "batch": batch}

    @model_validator(mode="after")
    def _check(self) -> QueueConfig:
        if self.wait_for_result and self.storage is not None:
            raise ValueError(WAIT_FOR_RESULT)
        if self.batch is None:
            return self
        if self.batch.sizer is None:
            sizer = self.sizer if "sizer" in self.model_fields_set else "items"
            if sizer == "requests":
                raise ValueError("batch::sizer: batching supports only items or bytes; set batch::sizer: items")
            self.batch.sizer = sizer
        if self.batch.sizer == "bytes":
            raise ValueError(BATCH_BYTES)
        if self.sizer == self.batch.sizer and self.batch.min_size > self.queue_size:
            raise ValueError("batch::min_size must be at most queue_size, or the queue could never fill a batch")
        return self

    def capacity(self) -> QueueCapacity:
        return QueueCapacity(self.queue_size, self.sizer)


# Why otelcol settings are refused rather than accepted and ignored:
WAIT_FOR_RESULT = ("wait_for_result is not supported with a persistent queue configured with storage, as in "
                   "otelcol; without storage the queue is edgeagent's own, durable as well, and the client's "
                   "answer waits for the upstream's")
BATCH_BYTES = ("batch::sizer: bytes: the durable queue counts and leases requests by items, not by their "
               "encoded size; use batch::sizer: items")


class ClientsGaveUp(RetryableError):
    """Every client waiting for a lease's records gave up on them (wait_for_result): it is not sent on."""


class SenderHost(Telemetry, Protocol):
    """What a sender asks of the agent beyond the chain's telemetry."""

    def component_stopped(self, path: str, message: str) -> None: ...


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
        self.link = link or Link(num_consumers, retry, lambda online: telemetry.upstream_state(exporter.id, online),
                                 upstream_addresses(exporter), exporter.id, telemetry)
        self.chain = ExportChain(exporter, self.signal, telemetry, timeout=timeout, retry=retry, link=self.link,
                                 drains_queue=True)
        self.newest_first = newest_first
        self._tasks: list[asyncio.Task[None]] = []
        self._delivering: set[asyncio.Task[None]] = set()  # consumers between lease and settlement
        # acks and give-backs submitted and not committed yet: shutdown waits for them, so that
        # once it returns no record of this sender is still leased (a purge then takes them all)
        self._settling: set[asyncio.Future[Any]] = set()
        self._closing = False
        self._flushing = asyncio.Event()  # set by flush(): batches no longer wait to fill
        self._gather_lock = asyncio.Lock()
        self._backlog = False  # the last lease left queued what one request could not carry
        self._troubled = False  # an unexpected error was logged and no delivery succeeded since

    async def start(self) -> None:
        for index in range(self.num_consumers):
            task = asyncio.create_task(self._consume(), name=f"sender:{self.exporter.id}:{self.signal.label}:{index}")
            task.add_done_callback(self._consumer_done)
            self._tasks.append(task)

    def flush(self) -> None:
        """Send what is queued without waiting for batches to fill, from now on (a drain before a stop)."""
        self._flushing.set()

    async def shutdown(self, grace: float = 3.0) -> None:
        """Stop leasing; let deliveries under way settle for up to `grace` seconds, then cancel them.

        A backoff wait ends at once (the data stays queued). A delivery cancelled mid-send returns
        its lease, so the upstream may get that batch twice; the grace period keeps that to
        deliveries that hang (stop and reload, not only crashes)."""
        self.chain.stop()
        self.link.close()
        tasks, self._tasks = self._tasks, []
        self._closing = True
        await self.link.interrupt()  # a consumer waiting for its turn to send is no delivery under way
        busy = [task for task in tasks if task in self._delivering]
        for task in tasks:
            if task not in self._delivering:
                task.cancel()
        if busy and grace > 0:
            await asyncio.wait(busy, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=max(grace, 1.0))

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("sender consumer stopped unexpectedly", exc_info=task.exception(),
                      extra={"exporter": self.exporter.id, "signal": self.signal.label})
            self.telemetry.component_stopped(f"exporters::{self.exporter.id}", str(task.exception()))

    async def _consume(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        while not self._closing:
            lease = None
            began: int | None = None  # the link's generation when this lease's delivery began
            try:
                lease = await self._next_lease()
                if lease is None:
                    continue
                began = self.link.generation
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
                await self.link.pause(pause, self.chain.stopping, began)  # over early when the upstream is back

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
        batch = self.batch
        if batch is None or not batch.send_batch_size or batch.timeout <= 0:  # no size trigger: one by one
            return await self.queue.lease(max_items=1 << 62, max_entries=1, newest_first=self.newest_first)
        async with self._gather_lock:
            await self.queue.wait_available()
            if not self._backlog and not self._flushing.is_set():
                deadline = asyncio.get_running_loop().time() + batch.timeout
                await self._fill(batch.send_batch_size, deadline)
            lease = await self.queue.lease(max_items=batch.send_batch_max_size or batch.send_batch_size,
                                           max_bytes=MERGED_REQUEST_BYTES, newest_first=self.newest_first)
            # short of the size trigger while more is queued: cut by the byte bound (or left records of
            # another batch key), so the next lease would wait for items it cannot take either
            self._backlog = lease is not None and lease.items < batch.send_batch_size and \
                self.queue.available_items > 0
            return lease

    async def _fill(self, items: int, deadline: float) -> None:
        """Until `items` are queued, `deadline` passes or flush() is called."""
        waits = [asyncio.ensure_future(self.queue.wait_items(items, deadline)),
                 asyncio.ensure_future(self._flushing.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _deliver(self, lease: Lease) -> float:
        """Send one lease and settle it; returns how long this consumer should pause."""
        try:
            await self._export(lease)
        except ShutdownError as exc:
            if not self._requeue(lease, exc, lease.attempts):
                self.queue.release(lease)
            return 0.0
        except ClientsGaveUp as exc:  # no upstream failure: no pause, no attempt counted
            self.queue.release(lease, error=exc)
            return 0.0
        except RetryableError as exc:  # records whose client waits for them go back to it (wait_for_result)
            if not self._requeue(lease, exc, lease.attempts + 1):
                self.queue.release(lease, attempts=lease.attempts + 1, error=exc)
            log.warning("upstream still failing after retries; data stays queued and will be sent again",
                        extra={"exporter": self.exporter.id, "signal": self.signal.label, "items": lease.items,
                               "error": str(exc)})
            return self.retry.max_interval
        if not lease.done:  # not dead-lettered
            self._settle(self.queue.ack(lease))
        self._troubled = False
        return 0.0

    def _requeue(self, lease: Lease, error: RetryableError, attempts: int) -> bool:
        """Give back only the requests the upstream did not take when the lease went out as several
        and a later one failed; False when nothing was delivered and the whole lease goes back.

        A lease a client waits for goes back whole: its answer covers every record it sent."""
        if error.unsent is None or self.queue.waited_for(lease):
            return False
        # serialized requests concatenate into one holding all their groups; merging them parsed every
        # part on the loop: 0.9 s and 300 MiB for what was left of a record of 60 MiB
        body = b"".join(part for part, _ in error.unsent)
        items = sum(items for _, items in error.unsent)
        self._settle(self.queue.requeue(lease, body, items, attempts))
        return True

    async def _export(self, lease: Lease) -> None:
        """The chain's export of the lease; stopped when every client waiting for its records gave up
        (wait_for_result), which then get them back (RetryableError: the lease is released)."""
        if not self.queue.waited_for(lease):
            await self.chain.export(await self._requests(lease), _LeaseDeadLetters(self.queue, lease))
            return
        requests = await self._requests(lease)
        export = asyncio.ensure_future(self.chain.export(requests, _LeaseDeadLetters(self.queue, lease), whole=True))
        given_up = asyncio.ensure_future(self.queue.abandoned(lease))
        try:
            await asyncio.wait((export, given_up), return_when=asyncio.FIRST_COMPLETED)
        finally:
            given_up.cancel()
            if not export.done():
                export.cancel()
            await asyncio.gather(export, given_up, return_exceptions=True)
        if export.cancelled() and not lease.done:  # (done: dead-lettered just before the clients left)
            raise ClientsGaveUp("every client waiting for this data gave up; it is theirs again")
        if not export.cancelled():
            export.result()

    def _settle(self, commit: asyncio.Future[Any]) -> None:
        self._settling.add(commit)
        commit.add_done_callback(self._ack_done)

    def _ack_done(self, future: asyncio.Future[Any]) -> None:
        self._settling.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("acknowledging delivered data failed; it will be delivered again",
                      exc_info=future.exception(), extra={"queue": self.queue.name})

    async def _requests(self, lease: Lease) -> list[Part]:
        try:
            return await self._batches(lease)
        except DecodeError:  # a record damaged on disk: it must not stop this consumer
            self._quarantine_unparsable(lease)
            return await self._batches(lease) if lease.bodies else []

    async def _batches(self, lease: Lease) -> list[Part]:
        body = merge_requests(self.signal, lease.bodies)
        max_items = self.batch.send_batch_max_size if self.batch else 0
        if not max_items or lease.items <= max_items:
            return [(body, lease.items)]
        if len(body) < _CUT_ON_LOOP_BYTES:
            return split_serialized(self.signal, body, max_items)
        # a walk over millions of items: on a thread, so that the loop keeps serving meanwhile
        return await asyncio.to_thread(split_serialized, self.signal, body, max_items)

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
