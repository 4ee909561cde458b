"""A consumer counts each request as arriving at its queue stores from admission until its put is
queued there (queue/arrivals.py): group commit waits for exactly those."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.queue.store import QueueStore
from edgeagent.service.consumers import RunningPipeline, SignalConsumer
from edgeagent.service.telemetry import Telemetry
from edgeagent.signals import Payload, Signal


def _request() -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "work"
    return request.SerializeToString()


class DropAll:
    id = "filter"

    def process(self, payload: Payload) -> Payload | None:
        return None


class Stage:
    async def ingest(self, payload: Payload, key: bytes) -> None:
        return None


def _consumer(store: QueueStore, **pipeline) -> SignalConsumer:
    consumer = SignalConsumer(Telemetry(), lambda: False, "otlp", Signal.TRACES)
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    consumer.add(RunningPipeline("traces", Signal.TRACES, targets=[(store, [queue])], **pipeline), [])
    return consumer


async def _with_store(path, body):
    store = QueueStore(str(path), sync=False)
    store.open()
    store.start()
    try:
        return await body(store)
    finally:
        await store.close()


def test_a_request_arrives_until_its_put_is_queued_not_until_it_is_durable(tmp_path):
    async def body(store: QueueStore) -> list[int]:
        consumer = _consumer(store, processors=[])
        counts = []
        with consumer.admission("http"):
            counts.append(store.arrivals.count)  # its body is being read
            consuming = asyncio.ensure_future(consumer.consume(Payload.from_bytes(Signal.TRACES, _request()), "http"))
            for _ in range(3):  # the put is handed to the writer within a pass of the loop, long before it is durable
                await asyncio.sleep(0)
            counts.append(store.arrivals.count)
            await consuming
        counts.append(store.arrivals.count)
        return counts

    assert asyncio.run(_with_store(tmp_path, body)) == [1, 0, 0]


@pytest.mark.parametrize("ending", ["refused", "dropped by a processor"])
def test_a_request_without_a_put_stops_arriving_when_it_ends(tmp_path, ending):
    async def body(store: QueueStore) -> list[int]:
        consumer = _consumer(store, processors=[DropAll()])
        counts = []
        with pytest.raises(ValueError) if ending == "refused" else contextlib.nullcontext(), consumer.admission("http"):
            counts.append(store.arrivals.count)
            if ending == "refused":
                raise ValueError("undecodable")
            await consumer.consume(Payload.from_bytes(Signal.TRACES, _request()), "http")
            counts.append(store.arrivals.count)  # no put came: still counted until the request ends
        counts.append(store.arrivals.count)
        return counts

    assert asyncio.run(_with_store(tmp_path, body)) == ([1, 0] if ending == "refused" else [1, 1, 0])


def test_a_pipeline_into_a_stage_does_not_count_at_the_store(tmp_path):
    async def body(store: QueueStore) -> int:
        consumer = _consumer(store, processors=[], stage=Stage())
        with consumer.admission("http"):
            return store.arrivals.count

    assert asyncio.run(_with_store(tmp_path, body)) == 0


@pytest.mark.parametrize("request_bytes", [b"", ExportTraceServiceRequest(
    resource_spans=[{"resource": {"attributes": [{"key": "service.name", "value": {"string_value": "a"}}]},
                     "scope_spans": [{}]}]).SerializeToString()], ids=["empty", "a resource without spans"])
def test_a_request_without_items_is_answered_without_a_record(tmp_path, request_bytes):
    """otelcol's OTLP receiver answers a request of no spans (data points, log records) at once
    and passes nothing on; a record of it would cost a commit and an export of nothing."""
    async def body(store: QueueStore) -> list[int]:
        consumer = _consumer(store, processors=[])
        entries = []
        for request in (request_bytes, _request()):  # then one with a span, which is queued
            with consumer.admission("http"):
                await consumer.consume(Payload.from_bytes(Signal.TRACES, request), "http")
            entries.append(store.queue("otlphttp/traces", Signal.TRACES).entries)
        return entries

    assert asyncio.run(_with_store(tmp_path, body)) == [0, 1]
