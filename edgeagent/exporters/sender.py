"""The sender: drains one durable queue into one exporter (the collector's exporterhelper).

Design note
===========
* A sender owns `num_consumers` consumer tasks for one (exporter, signal) queue. Each
  consumer leases the oldest records, merges them into one request (batch settings), sends
  it with retry and backoff, and then acks (2xx), dead-letters (permanent rejection, with the
  upstream's answer) or releases (retries ran out, or shutdown) the lease.
* Nothing is dropped when `retry_on_failure.max_elapsed_time` runs out: the records go back
  to the queue and are sent again after a pause. otelcol drops them; an edge agent must not.
* Batching happens here, after the durable commit: one consumer at a time gathers a batch,
  waiting until `send_batch_size` items are queued or `timeout` has passed since it started
  waiting. Requests larger than `send_batch_max_size` are split.
* Shutdown cancels the consumers; a cancelled consumer releases its lease, so in-flight
  data stays queued for the next run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf.message import DecodeError
from pydantic import Field
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, stop_never

from edgeagent.component import ComponentConfig
from edgeagent.errors import PermanentError, RetryableError
from edgeagent.exporters.link import Link
from edgeagent.exporters.retry import Backoff, RetryConfig
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
class SendResult:
    rejected: int = 0
    message: str = ""


def partial_success(signal: Signal, content: bytes) -> SendResult:
    """What an Export*ServiceResponse says the upstream rejected (OTLP partial success)."""
    if not content:
        return SendResult()
    try:
        response = signal.response_class.FromString(content)
    except DecodeError:
        return SendResult()
    if not response.HasField("partial_success"):
        return SendResult()
    partial = response.partial_success
    return SendResult(rejected=getattr(partial, f"rejected_{signal.item_name}", 0), message=partial.error_message)


@dataclass
class BatchSettings:
    timeout: float
    send_batch_size: int
    send_batch_max_size: int


class Sender:
    def __init__(self, exporter: Any, queue: ConsumerQueue, retry: RetryConfig, num_consumers: int,
                 batch: BatchSettings | None, telemetry: Any, link: Link | None = None,
                 newest_first: bool = False):
        self.exporter = exporter
        self.queue = queue
        self.signal: Signal = queue.signal
        self.retry = retry
        self.num_consumers = num_consumers
        self.batch = batch
        self.telemetry = telemetry
        self.link = link or Link(num_consumers, retry, lambda online: telemetry.upstream_state(exporter.id, online))
        self.newest_first = newest_first
        self._tasks: list[asyncio.Task] = []
        self._gather_lock = asyncio.Lock()
        self._last_partial_log = 0.0

    async def start(self) -> None:
        for index in range(self.num_consumers):
            task = asyncio.create_task(self._consume(), name=f"sender:{self.exporter.id}:{self.signal.label}:{index}")
            task.add_done_callback(self._consumer_done)
            self._tasks.append(task)

    async def shutdown(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _consumer_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("sender consumer stopped unexpectedly", exc_info=task.exception(),
                      extra={"exporter": self.exporter.id, "signal": self.signal.label})
            self.telemetry.component_failed(f"exporters::{self.exporter.id}", str(task.exception()))

    async def _consume(self) -> None:
        while True:
            lease = await self._next_lease()
            if lease is None:
                continue
            try:
                pause = await self._deliver(lease)
            except BaseException:
                if not lease.done:
                    self.queue.release(lease)
                raise
            if pause:
                await asyncio.sleep(pause)

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
        exporter_id = self.exporter.id
        items_name = self.signal.item_name
        outcome = _Outcome()
        try:
            for body, items in self._requests(lease):
                await self._send_splitting(body, items, outcome)
        except RetryableError as exc:
            self.queue.release(lease, attempts=lease.attempts + 1)
            self.telemetry.counter_inc(f"otelcol_exporter_send_failed_{items_name}", lease.items, exporter_id)
            log.warning("upstream still failing after retries; data stays queued and will be sent again",
                        extra={"exporter": exporter_id, "signal": self.signal.label, "items": lease.items,
                               "error": str(exc)})
            return self.retry.max_interval
        if outcome.refused:
            await self._dead_letter(lease, outcome)
        else:
            self.queue.ack(lease).add_done_callback(self._ack_done)
        sent = lease.items - outcome.refused_items - outcome.rejected
        self.telemetry.counter_inc(f"otelcol_exporter_sent_{items_name}", sent, exporter_id)
        if outcome.rejected:
            self.telemetry.counter_inc(f"edgeagent_exporter_rejected_{items_name}", outcome.rejected, exporter_id)
        return 0.0

    async def _send_splitting(self, body: bytes, items: int, outcome: "_Outcome") -> None:
        """Send a request; on 413 send its halves instead, down to single items."""
        try:
            result = await self._send_with_retry(body)
        except PermanentError as exc:
            if exc.status == 413 and items > 1:
                request = self.signal.request_class.FromString(body)
                for half in split_request(self.signal, request, (items + 1) // 2):
                    await self._send_splitting(half.SerializeToString(), count_items(self.signal, half), outcome)
                return
            outcome.refuse(body, items, exc)
            return
        outcome.rejected += result.rejected
        if result.rejected:
            self._log_partial(result)

    async def _dead_letter(self, lease: Lease, outcome: "_Outcome") -> None:
        exporter_id = self.exporter.id
        exc = outcome.error
        description = {"exporter": exporter_id, "status": exc.status, "reason": str(exc),
                       "response": exc.body.decode("utf-8", "replace")}
        whole = outcome.refused_items == lease.items and len(outcome.refused) == 1
        # a request refused as a whole keeps its queue records; parts of a split one are stored as sent
        await self.queue.dead_letter(lease, description, bodies=None if whole else outcome.refused)
        self.telemetry.counter_inc(f"otelcol_exporter_send_failed_{self.signal.item_name}", outcome.refused_items,
                                   exporter_id)
        self.telemetry.counter_inc("edgeagent_deadletter_items", outcome.refused_items, exporter_id, self.signal.label)
        log.error("upstream rejected data permanently; moved it to the dead-letter store",
                  extra={"exporter": exporter_id, "signal": self.signal.label, "items": outcome.refused_items,
                         "error": str(exc)})

    def _ack_done(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("acknowledging delivered data failed; it will be delivered again",
                      exc_info=future.exception(), extra={"queue": self.queue.name})

    def _requests(self, lease: Lease) -> list[tuple[bytes, int]]:
        try:
            return self._batches(lease)
        except DecodeError:  # a record damaged on disk: it must not stop this consumer
            self._quarantine_unparsable(lease)
            return self._batches(lease) if lease.bodies else []

    def _batches(self, lease: Lease) -> list[tuple[bytes, int]]:
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

    async def _send_with_retry(self, body: bytes) -> SendResult:
        retry = self.retry
        if not retry.enabled:
            stop = stop_after_attempt(1)
        elif retry.max_elapsed_time > 0:
            stop = stop_after_delay(retry.max_elapsed_time)
        else:
            stop = stop_never
        attempts = AsyncRetrying(retry=retry_if_exception_type(RetryableError), wait=Backoff(retry), stop=stop,
                                 reraise=True, before_sleep=self._before_retry)
        async for attempt in attempts:
            with attempt:
                async with self.link.attempt():
                    try:
                        result = await self.exporter.send(self.signal, body)
                    except RetryableError as exc:
                        await self.link.failed(exc)
                        raise
                    except PermanentError:
                        await self.link.succeeded()  # it answered: the link works
                        raise
                await self.link.succeeded()
                return result
        raise AssertionError("unreachable")

    def _before_retry(self, state: Any) -> None:
        exc = state.outcome.exception()
        log.debug("send failed; retrying", extra={"exporter": self.exporter.id, "signal": self.signal.label,
                                                   "attempt": state.attempt_number, "error": str(exc)})

    def _log_partial(self, result: SendResult) -> None:
        now = time.monotonic()
        if now - self._last_partial_log > 60:
            self._last_partial_log = now
            log.warning("upstream accepted the request partially", extra={
                "exporter": self.exporter.id, "signal": self.signal.label, "rejected": result.rejected,
                "upstream_message": result.message})


@dataclass
class _Outcome:
    """What became of one lease's requests: items the upstream rejected, and requests it refused."""

    rejected: int = 0  # reported in partial_success: not retried, not stored
    refused: list[tuple[bytes, int]] = field(default_factory=list)  # permanently refused (body, items)
    refused_items: int = 0
    error: PermanentError | None = None

    def refuse(self, body: bytes, items: int, error: PermanentError) -> None:
        self.refused.append((body, items))
        self.refused_items += items
        self.error = self.error or error
