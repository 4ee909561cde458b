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
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, stop_never

from edgeagent.component import ComponentConfig
from edgeagent.errors import PermanentError, RetryableError
from edgeagent.exporters.retry import Backoff, RetryConfig
from edgeagent.queue.limits import QueueCapacity
from edgeagent.queue.lmdb_queue import DurableQueue, Lease
from edgeagent.signals import Signal, merge_requests, split_request

log = logging.getLogger(__name__)


class QueueConfig(ComponentConfig):
    enabled: bool = True
    num_consumers: int = Field(10, ge=1)
    queue_size: int = Field(1000, ge=1)
    sizer: Literal["requests", "items", "bytes"] = "requests"
    storage: str | None = None

    def capacity(self) -> QueueCapacity:
        return QueueCapacity(self.queue_size, self.sizer)


@dataclass
class SendResult:
    rejected: int = 0
    message: str = ""


@dataclass
class BatchSettings:
    timeout: float
    send_batch_size: int
    send_batch_max_size: int


class Sender:
    def __init__(self, exporter: Any, queue: DurableQueue, retry: RetryConfig, num_consumers: int,
                 batch: BatchSettings | None, telemetry: Any):
        self.exporter = exporter
        self.queue = queue
        self.signal: Signal = queue.signal
        self.retry = retry
        self.num_consumers = num_consumers
        self.batch = batch
        self.telemetry = telemetry
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
            return await self.queue.lease(max_items=1 << 62, max_entries=1)
        async with self._gather_lock:
            await self.queue.wait_available()
            if self.batch.send_batch_size and self.batch.timeout > 0:
                deadline = asyncio.get_running_loop().time() + self.batch.timeout
                await self.queue.wait_items(self.batch.send_batch_size, deadline)
            limit = self.batch.send_batch_max_size or self.batch.send_batch_size or (1 << 62)
            return await self.queue.lease(max_items=limit)

    async def _deliver(self, lease: Lease) -> float:
        """Send one lease and settle it; returns how long this consumer should pause."""
        exporter_id = self.exporter.id
        items_name = self.signal.item_name
        parts = self._requests(lease)
        try:
            rejected = 0
            for body in parts:
                result = await self._send_with_retry(body)
                rejected += result.rejected
                if result.rejected:
                    self._log_partial(result)
        except PermanentError as exc:
            await self.queue.dead_letter(lease, {"exporter": exporter_id, "status": exc.status, "reason": str(exc),
                                                 "response": exc.body.decode("utf-8", "replace")})
            self.telemetry.counter_inc(f"otelcol_exporter_send_failed_{items_name}", lease.items, exporter_id)
            self.telemetry.counter_inc("edgeagent_deadletter_items", lease.items, exporter_id, self.signal.label)
            log.error("upstream rejected data permanently; moved it to the dead-letter store",
                      extra={"exporter": exporter_id, "signal": self.signal.label, "items": lease.items, "error": str(exc)})
            return 0.0
        except RetryableError as exc:
            self.queue.release(lease, attempts=lease.attempts + 1)
            self.telemetry.counter_inc(f"otelcol_exporter_send_failed_{items_name}", lease.items, exporter_id)
            log.warning("upstream still failing after retries; data stays queued and will be sent again",
                        extra={"exporter": exporter_id, "signal": self.signal.label, "items": lease.items,
                               "error": str(exc)})
            return self.retry.max_interval
        self.queue.ack(lease).add_done_callback(self._ack_done)
        self.telemetry.counter_inc(f"otelcol_exporter_sent_{items_name}", lease.items - rejected, exporter_id)
        if rejected:
            self.telemetry.counter_inc(f"edgeagent_exporter_rejected_{items_name}", rejected, exporter_id)
        return 0.0

    def _ack_done(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("acknowledging delivered data failed; it will be delivered again",
                      exc_info=future.exception(), extra={"queue": self.queue.name})

    def _requests(self, lease: Lease) -> list[bytes]:
        body = merge_requests(self.signal, lease.bodies)
        max_items = self.batch.send_batch_max_size if self.batch else 0
        if not max_items or lease.items <= max_items:
            return [body]
        request = self.signal.request_class.FromString(body)
        return [part.SerializeToString() for part in split_request(self.signal, request, max_items)]

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
                try:
                    result = await self.exporter.send(self.signal, body)
                except RetryableError as exc:
                    self.telemetry.upstream_state(self.exporter.id, online=not exc.connection)
                    raise
                self.telemetry.upstream_state(self.exporter.id, online=True)
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
