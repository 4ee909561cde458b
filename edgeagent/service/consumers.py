"""What receivers hand requests to: a consumer per receiver and signal, and the pipelines behind it.

A consumer admits a request (memory limiter, shutdown), copies it for every pipeline that lists
the receiver, and answers once every pipeline has made it durable. A pipeline runs its processors
in order, then writes the result to its exporters' queues in one commit per queue store (or hands
it to its tail-sampling stage, or sends it at once to exporters whose sending_queue is disabled).
Exporters with block_on_overflow or wait_for_result make the answer wait longer (delivery.py).

From its admission until its records are queued, a request counts as arriving at the queue
stores its pipelines write to (queue/arrivals.py), so that a group commit waits for it when,
and only when, it is coming. Receivers call `consume` inside `admission`, in one task; the
request's `Arrival` passes from one to the other in a context variable, so receivers need not
carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgeagent.errors import DataRefusedError, RetryableError, ShutdownError
from edgeagent.exporters.chain import ExportChain, send_now
from edgeagent.processors.batch import BatchConfig
from edgeagent.processors.memory_limiter import Reservation
from edgeagent.queue.arrivals import Arrival, Arrivals
from edgeagent.queue.reader import DurableQueue
from edgeagent.queue.store import QueueStore
from edgeagent.service import delivery
from edgeagent.service.host import Telemetry
from edgeagent.signals import Payload, Signal

_ARRIVAL: contextvars.ContextVar[Arrival | None] = contextvars.ContextVar("arrival", default=None)


class Processor(Protocol):
    id: str

    def process(self, payload: Payload) -> Payload | None: ...


class Meter(Protocol):
    """otelcol's pipeline telemetry: what each processor took in and gave out, what each queue was handed."""

    def run(self, processor: Processor, payload: Payload) -> Payload | None: ...

    def enqueue(self, queues: list[DurableQueue], items: int, size: int) -> None: ...


class Limiter(Protocol):
    """A processor that also guards admission (memory_limiter)."""

    id: str
    hard: int

    @property
    def room(self) -> int: ...

    def admit(self) -> None: ...

    def charge(self, cost: int, held: int = 0) -> int: ...

    def release(self, cost: int) -> None: ...


class Batcher(Protocol):
    """The batch processor: its settings go to the senders, its metadata_keys split the queue's batches."""

    config: BatchConfig

    def batch_key(self, metadata: dict[str, str]) -> bytes: ...


class Stage(Protocol):
    """A processor that takes over the rest of its pipeline (tail_sampling)."""

    async def ingest(self, payload: Payload, key: bytes) -> None: ...


@dataclass
class RunningPipeline:
    """A pipeline as it runs: its processors, its batcher, and the queues or chains it feeds."""

    id: str
    signal: Signal
    processors: list[Processor]
    batch: Batcher | None = None
    targets: list[tuple[QueueStore, list[DurableQueue]]] = field(default_factory=list)
    direct: list[ExportChain] = field(default_factory=list)  # exporters with sending_queue disabled
    stage: Stage | None = None  # tail_sampling: it writes to the targets itself
    meter: Meter | None = None
    waits: delivery.Waits = field(default_factory=delivery.Waits)  # block_on_overflow, wait_for_result

    def arrivals(self) -> list[Arrivals]:
        """Where a request on its way here counts: the stores written to directly (a stage commits on its own)."""
        return [store.arrivals for store, _ in self.targets] if self.stage is None else []

    async def consume(self, payload: Payload, arrival: Arrival | None = None) -> None:
        for processor in self.processors:
            result = processor.process(payload) if self.meter is None else self.meter.run(processor, payload)
            if result is None:
                return
            payload = result
        key = self.batch.batch_key(payload.metadata) if self.batch is not None else b""
        if self.stage is not None:
            await self.stage.ingest(payload, key)
            return
        # serializing for a direct exporter adds deferred attributes, so the queues then get none to defer
        writes = [send_now(chain, payload.serialized(), payload.items) for chain in self.direct]
        body, attributes = payload.stored_form()  # deferred attributes are added when the record is read
        if self.meter is not None:
            for _, queues in self.targets:
                self.meter.enqueue(queues, payload.items, len(body))
        if not self.waits.blocking and not self.waits.watched:
            writes += [store.put(queues, body, payload.items, self.signal, key, attributes, arrival)
                       for store, queues in self.targets]
            if len(writes) == 1:
                await writes[0]
            else:
                await asyncio.gather(*writes)
            return
        await self._write_and_wait(writes, body, payload, key, attributes, arrival)

    async def _write_and_wait(self, direct: list[Coroutine[Any, Any, None]], body: bytes, payload: Payload,
                              key: bytes, attributes: bytes, arrival: Arrival | None) -> None:
        """The commit, waiting for room where a queue blocks on overflow; then the delivery of the
        records an exporter waits for (delivery.py)."""
        written = await asyncio.gather(*direct, *(
            delivery.write(store, queues, self.waits, body, payload.items, self.signal, key, attributes,
                           payload.deadline, arrival) for store, queues in self.targets), return_exceptions=True)
        outcomes = [outcome for result in written if isinstance(result, list) for outcome in result]
        failed = [result for result in written if isinstance(result, BaseException)]
        if failed:
            for outcome in outcomes:  # the client gets an error: the records it waited for are its own again
                outcome.cancel()
            raise failed[0]
        if outcomes:
            await delivery.results(outcomes, payload.deadline)


class SignalConsumer:
    """What a receiver hands requests of one signal to: every pipeline that lists the receiver."""

    def __init__(self, telemetry: Telemetry, stopping: Callable[[], bool], receiver_id: str, signal: Signal):
        self.telemetry = telemetry
        self.stopping = stopping
        self.receiver_id = receiver_id
        self.signal = signal
        self.pipelines: list[RunningPipeline] = []
        self.limiters: list[Limiter] = []
        self._arrivals: list[Arrivals] = []  # of every store the pipelines write to directly
        metrics = telemetry.metrics
        self._accepted = metrics.counter(f"otelcol_receiver_accepted_{signal.item_name}",
                                         f"Number of {signal.item_name} successfully pushed into the pipeline.",
                                         ("receiver", "transport"))
        self._refused = metrics.counter(f"otelcol_receiver_refused_{signal.item_name}",
                                        f"Number of {signal.item_name} that could not be pushed into the pipeline.",
                                        ("receiver", "transport"))
        # otelcol's "internal errors" of a receiver: decoding failures happen before a request gets here,
        # so, as for otelcol's otlp receiver, this stays 0; served so that queries over it find a series
        self._failed = metrics.counter(f"otelcol_receiver_failed_{signal.item_name}",
                                       f"Number of {signal.item_name} that failed to be processed by the receiver "
                                       "due to internal errors.", ("receiver", "transport"))
        # a memory limiter's refusals, counted with the receiver's (the limiter refuses before any processor)
        self._limiter_refused = metrics.counter(f"otelcol_processor_memory_limiter_refused_{signal.item_name}",
                                                f"Number of {signal.item_name} that were rejected by the memory "
                                                "limiter.", ("processor",))
        self._transports: set[str] = set()

    def add(self, pipeline: RunningPipeline, limiters: list[Limiter]) -> None:
        self.pipelines.append(pipeline)
        self.limiters += [limiter for limiter in limiters if limiter not in self.limiters]
        self._arrivals += [arrivals for arrivals in pipeline.arrivals() if arrivals not in self._arrivals]

    @contextlib.contextmanager
    def admission(self, transport: str, body_bytes: int = 0) -> Iterator[Reservation]:
        """Hold a request's place in the memory budget while it is read and committed; the
        receiver grows it (`Reservation.grow`) as body bytes arrive. The request counts as
        arriving at the queue stores until its records are queued there or it ends.

        Refuses (counted) when the agent stops or memory is short, before or while the body is read."""
        def refused(exc: RetryableError) -> None:
            self.telemetry.counter_inc("edgeagent_receiver_refused_requests", 1, self.receiver_id, transport,
                                       type(exc).__name__)

        reservation = Reservation(self.limiters, refused)
        arrival = Arrival(self._arrivals)
        token = _ARRIVAL.set(arrival)
        try:
            if self.stopping():
                exc = ShutdownError("the agent is shutting down", retry_after=5.0)
                refused(exc)
                raise exc
            reservation.grow(body_bytes)
            yield reservation
        finally:
            reservation.release()
            arrival.settle()
            _ARRIVAL.reset(token)

    def refusal(self, transport: str) -> tuple[str, DataRefusedError] | None:
        """The refusal of the first memory limiter that refuses new data now, with its id; the request
        is counted as refused (its items with `count_refused`, once they are known)."""
        for limiter in self.limiters:
            try:
                limiter.admit()
            except DataRefusedError as exc:
                self._series(transport)
                self.telemetry.counter_inc("edgeagent_receiver_refused_requests", 1, self.receiver_id, transport,
                                           type(exc).__name__)
                return limiter.id, exc
        return None

    def count_refused(self, transport: str, items: int, limiter_id: str) -> None:
        """`items` of a request `limiter_id` refused, as otelcol's receiver and memory limiter count them."""
        if items:
            self._refused.inc(items, self.receiver_id, transport)
            self._limiter_refused.inc(items, limiter_id)
            # otelcol's memory limiter takes them in and lets none out (its pipelines' meters count both)
            self.telemetry.count("otelcol_processor_incoming_items", items, limiter_id, self.signal.label)
            self.telemetry.count("otelcol_processor_outgoing_items", 0, limiter_id, self.signal.label)

    def _series(self, transport: str) -> None:
        """Every outcome's series exists from a transport's first request on."""
        if transport not in self._transports:
            self._transports.add(transport)
            for counter in (self._accepted, self._refused, self._failed):
                counter.inc(0, self.receiver_id, transport)

    def _admit(self) -> None:
        if self.stopping():
            raise ShutdownError("the agent is shutting down", retry_after=5.0)
        for limiter in self.limiters:
            limiter.admit()

    async def consume(self, payload: Payload, transport: str) -> None:
        self._series(transport)
        if not payload.items:  # nothing to keep: answered at once, as otelcol's OTLP receiver answers it
            return
        try:
            self._admit()
            arrival = _ARRIVAL.get()
            last = len(self.pipelines) - 1
            if last == 0:
                await self.pipelines[0].consume(payload, arrival)
            else:
                await asyncio.gather(*(pipeline.consume(payload if index == last else payload.copy(), arrival)
                                       for index, pipeline in enumerate(self.pipelines)))
        except BaseException:
            self._refused.inc(payload.items, self.receiver_id, transport)
            raise
        self._accepted.inc(payload.items, self.receiver_id, transport)


class ConsumerSlot:
    """What a receiver holds: a fixed handle on the consumer of the graph that runs now.

    A config reload points the slot at the new graph's consumer, so a receiver whose own
    settings did not change keeps its port and its connections across the reload."""

    def __init__(self, target: SignalConsumer):
        self.target = target

    def admission(self, transport: str, body_bytes: int = 0) -> contextlib.AbstractContextManager[Reservation]:
        return self.target.admission(transport, body_bytes)

    def refusal(self, transport: str) -> tuple[str, DataRefusedError] | None:
        return self.target.refusal(transport)

    def count_refused(self, transport: str, items: int, limiter_id: str) -> None:
        self.target.count_refused(transport, items, limiter_id)

    async def consume(self, payload: Payload, transport: str) -> None:
        await self.target.consume(payload, transport)
