"""Stress relief outlives a memory reading that fails: while the process's memory cannot be
measured it counts as full (relief on: new traces are decided at once, nothing more is
buffered), said once, and the decisions go on."""

from __future__ import annotations

import asyncio
import functools
import logging

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from edgeagent.processors.memory_limiter import anonymous_memory
from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from edgeagent.processors.tail_sampling.stage import SamplingStage
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Payload, Signal
from tests.helpers.descriptors import no_free_descriptors

TICK = 0.05  # a decision_wait of 500ms


def _kept_span(trace_id: bytes) -> Payload:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(trace_id=trace_id, span_id=trace_id[:8])
    span.status.code = Status.STATUS_CODE_ERROR
    return Payload.from_bytes(Signal.TRACES, request.SerializeToString())


def test_stress_relief_that_cannot_read_memory_counts_it_as_full_and_the_decisions_go_on(tmp_path, caplog):
    """With every descriptor taken, reading the process's memory raised out of the decision
    loop's tick: tail sampling stopped deciding for good, and every request failed too."""
    async def scenario() -> tuple[bool, bool, bool, bool]:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({
            "decision_wait": "500ms", "stress_relief": {"memory_limit_mib": 1 << 20},
            "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
        stage = SamplingStage("tail_sampling", config, host=None)
        # a status file opened at each reading: the agent's own /proc/self/status is read through a
        # descriptor it keeps (memory_limiter.py), which the descriptors taken below would not take away
        status = tmp_path / "status"
        status.write_text("Name:\tedgeagent\nRssAnon:\t   10240 kB\n")
        stage.relief.memory = functools.partial(anonymous_memory, str(status))
        stage.attach(store, [export], [])
        store.start()
        await stage.start()
        try:
            with no_free_descriptors():
                await asyncio.sleep(4 * TICK)
                relieved = stage.relief.active
                await stage.ingest(_kept_span(b"\x01" * 16))  # decided at once, by its id
            running = stage._task is not None and not stage._task.done()
            await asyncio.sleep(0.3)  # stress relief lasts its minimum_activation_duration (10 s)
            await stage.ingest(_kept_span(b"\x02" * 16))
            for _ in range(100):
                if stage.cache.lookup(b"\x02" * 16) is not None:
                    break
                await asyncio.sleep(TICK)
            decided = stage.cache.lookup(b"\x02" * 16) is not None
            still_running = not stage._task.done()
        finally:
            await stage.shutdown()
            await store.close()
        return relieved, running, decided, still_running

    with caplog.at_level(logging.ERROR):
        relieved, running, decided, still_running = asyncio.run(scenario())
    assert relieved, "memory that cannot be measured counts as full"
    assert running and decided and still_running
    failed = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(failed) == 1 and failed[0].__dict__.get("processor") == "tail_sampling"
