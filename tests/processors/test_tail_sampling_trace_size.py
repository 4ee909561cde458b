"""maximum_trace_size_bytes counts a trace's bytes as otelcol 0.165 does (sampler.sizing): a
trace exactly at the limit is decided, one byte over is dropped at once, also when its first
spans were buffered before a restart. Side by side with otelcol: tests/interop."""

from __future__ import annotations

import asyncio

import pytest

from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from edgeagent.processors.tail_sampling.stage import SamplingStage
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Payload, Signal
from tests.processors.test_tail_sampling_stage import Clock, _Host
from tests.sampler.test_sizing import ONE, child_request, root_request

# otelcol counts 43 bytes of the root's request and 88 of the child's (tests/sampler/test_sizing.py);
# protobuf writes 37 and 88, the framing of each resource spans included
TRACE_SIZE = 43 + 88
DROPPED = ("otelcol_processor_tail_sampling_traces_dropped_too_large", ("tail_sampling",))


async def _stage(path, clock: Clock, host: _Host, limit: int) -> tuple[SamplingStage, QueueStore]:
    store = QueueStore(str(path))
    store.open()
    export = store.queue("otlphttp/traces", Signal.TRACES)
    config = TailSamplingConfig.model_validate({"decision_wait": "5s", "maximum_trace_size_bytes": limit,
                                                "policies": [{"name": "all", "type": "always_sample"}]})
    stage = SamplingStage("tail_sampling", config, host=host, clock=clock)
    stage.attach(store, [export], [])
    store.start()
    return stage, store


def _ingest(stage: SamplingStage, request) -> None:
    return stage.ingest(Payload.from_bytes(Signal.TRACES, request.SerializeToString()))


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted between its requests"])
@pytest.mark.parametrize("limit, dropped", [(TRACE_SIZE, 0), (TRACE_SIZE - 1, 1)], ids=["at the limit", "one over"])
def test_a_trace_at_the_limit_is_kept_and_one_byte_over_is_dropped_as_otelcol_counts_bytes(
        tmp_path, limit, dropped, restart):
    async def scenario() -> tuple[float, bool]:
        clock, host = Clock(), _Host()
        stage, store = await _stage(tmp_path, clock, host, limit)
        await stage.start()
        await _ingest(stage, root_request())
        if restart:
            await stage.shutdown()
            await store.close()
            stage, store = await _stage(tmp_path, clock, host, limit)
            await stage.start()
        await _ingest(stage, child_request())
        pending = ONE in stage.buffer
        await stage.shutdown()
        await store.close()
        return host.metrics.counts.get(DROPPED, 0), pending

    assert asyncio.run(scenario()) == (dropped, not dropped)
