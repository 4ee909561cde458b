"""A processor after tail_sampling that fails on a kept trace (a filter with error_mode: propagate
meeting a value its condition cannot evaluate) costs that trace only: its spans go to the
dead-letter store, the other kept traces are exported, and the decisions go on."""

from __future__ import annotations

import asyncio
import logging

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from edgeagent.processors.filter import FilterConfig, FilterProcessor
from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from edgeagent.processors.tail_sampling.stage import SamplingStage
from edgeagent.queue.reader import DurableQueue
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Payload, Signal

POISON, GOOD, LATER = b"\x0a" * 16, b"\x0b" * 16, b"\x0c" * 16


def _request(spans: dict[bytes, str]) -> Payload:
    """One kept (ERROR) span per trace id, with attribute n."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for trace_id, n in spans.items():
        span = scope.spans.add(trace_id=trace_id, span_id=trace_id[:8], name="work")
        span.status.code = Status.STATUS_CODE_ERROR
        span.attributes.add(key="n").value.string_value = n
    return Payload.from_bytes(Signal.TRACES, request.SerializeToString())


async def _exported(queue: DurableQueue, want: int) -> set[bytes]:
    seen: set[bytes] = set()
    for _ in range(100):
        lease = await asyncio.wait_for(queue.lease(1_000_000), 1.0) if queue.available_entries else None
        if lease is not None:
            seen |= {span.trace_id for body in lease.bodies
                     for group in ExportTraceServiceRequest.FromString(body).resource_spans
                     for scope in group.scope_spans for span in scope.spans}
            await queue.ack(lease)
        if len(seen) >= want:
            break
        await asyncio.sleep(0.02)
    return seen


def test_a_kept_trace_the_later_processors_fail_on_is_dead_lettered_and_the_others_go_out(tmp_path, caplog):
    """The filter's error was raised out of the decision round: the loop stopped deciding for
    good, every trace after it stayed buffered, and after a restart the same trace stopped it again."""
    async def scenario() -> tuple[set[bytes], set[bytes], int, bool]:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({"decision_wait": "100ms", "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
        stage = SamplingStage("tail_sampling", config, host=None)
        strict = FilterProcessor("filter/strict", FilterConfig.model_validate(
            {"error_mode": "propagate", "trace_conditions": ['Int(span.attributes["n"]) > 1']}))
        stage.attach(store, [export], [strict])
        store.start()
        await stage.start()
        try:
            await stage.ingest(_request({POISON: "abc", GOOD: "0"}))
            first = await _exported(export, 1)
            await stage.ingest(_request({LATER: "0"}))
            second = await _exported(export, 1)
            running = stage._task is not None and not stage._task.done()
        finally:
            await stage.shutdown()
            await store.close()
        return first, second, store.deadletter_entries, running

    with caplog.at_level(logging.ERROR):
        first, second, dead_letters, running = asyncio.run(scenario())
    assert (first, second) == ({GOOD}, {LATER})
    assert dead_letters == 1
    assert running
    failed = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(failed) == 1 and failed[0].__dict__.get("processor") == "tail_sampling"
