"""The tail-sampling stage in process over a real queue store: decisions keep up with traffic,
and what it moves to export is what arrived."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from edgeagent.errors import RetryableError
from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from edgeagent.processors.tail_sampling.stage import SamplingStage
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Payload, Signal
from sampler.buffer import SPANS, TIMES
from tests.sampler.policies.test_hint_exactness import POLICIES as HINT_POLICIES


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _request(traces: int, rng: random.Random, spans_per_trace: int = 1) -> bytes:
    request = ExportTraceServiceRequest()
    group = request.resource_spans.add()
    group.resource.attributes.add(key="service.name").value.string_value = "test"
    spans = group.scope_spans.add(scope={"name": "test"}).spans
    for number in range(traces):
        trace_id = rng.randbytes(16)
        for index in range(spans_per_trace):
            span = spans.add(trace_id=trace_id, span_id=rng.randbytes(8), name=f"span-{index}",
                             start_time_unix_nano=1, end_time_unix_nano=2)
            if number % 3 == 0 and index == 0:
                span.status.code = Status.STATUS_CODE_ERROR
    return request.SerializeToString()


async def _stage(tmp_path, clock: Clock, wait: str) -> tuple[SamplingStage, QueueStore, object]:
    store = QueueStore(str(tmp_path))
    store.open()
    export = store.queue("otlphttp/traces", Signal.TRACES)
    config = TailSamplingConfig.model_validate({"decision_wait": wait, "num_traces": 1_000_000, "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
    stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
    stage.attach(store, [export], [])
    store.start()
    return stage, store, export


def test_many_due_traces_are_decided_in_one_tick_not_a_thousand_a_tick(tmp_path):
    async def scenario() -> tuple[int, float]:
        clock = Clock()
        stage, store, _ = await _stage(tmp_path, clock, "30s")  # a tick of 1 s
        rng = random.Random(3)
        for _ in range(5):
            await stage.ingest(Payload.from_bytes(Signal.TRACES, _request(1000, rng)))
        await stage.start()
        clock.now += 31
        started = time.monotonic()
        stage._wake.set()
        for _ in range(400):  # bounded: 4 s
            if not stage.pending_traces():
                break
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        left = stage.pending_traces()
        await stage.shutdown()
        await store.close()
        return left, elapsed

    left, elapsed = asyncio.run(scenario())
    assert left == 0 and elapsed < 1.0, (left, elapsed)


def test_kept_traces_reach_export_with_every_span_and_dropped_ones_do_not(tmp_path):
    async def scenario() -> tuple[ExportTraceServiceRequest, int]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path, clock, "5s")
        rng = random.Random(4)
        for _ in range(3):
            await stage.ingest(Payload.from_bytes(Signal.TRACES, _request(30, rng, spans_per_trace=4)))
        clock.now += 6
        for _ in range(100):
            if not await stage.decide_due():
                break
        lease = await export.lease(1_000_000)
        merged = ExportTraceServiceRequest()
        for body in lease.bodies:
            merged.MergeFromString(body)
        items = lease.items
        await store.close()
        return merged, items

    merged, items = asyncio.run(scenario())
    spans = [span for group in merged.resource_spans for scope in group.scope_spans for span in scope.spans]
    by_trace: dict[bytes, list] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    assert len(by_trace) == 30 and items == len(spans) == 120  # a third of 90 traces, 4 spans each
    assert all(any(span.status.code == Status.STATUS_CODE_ERROR for span in trace) for trace in by_trace.values())
    assert all(group.resource.attributes[0].value.string_value == "test" for group in merged.resource_spans)


class _Tag:
    """A processor after tail_sampling: marks every resource it sees."""

    def process(self, payload: Payload) -> Payload:
        for group in payload.mutable_message().resource_spans:
            group.resource.attributes.add(key="tagged").value.bool_value = True
        return payload


def test_processors_after_tail_sampling_see_kept_traces_and_their_late_spans(tmp_path):
    async def scenario() -> tuple[list[ExportTraceServiceRequest], bytes]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path, clock, "5s")
        stage.attach(store, [export], [_Tag()])
        rng = random.Random(6)
        body = _request(9, rng, spans_per_trace=2)
        await stage.ingest(Payload.from_bytes(Signal.TRACES, body))
        clock.now += 6
        await stage.decide_due()
        kept_id = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0].trace_id
        late = ExportTraceServiceRequest()
        late.resource_spans.add().scope_spans.add().spans.add(trace_id=kept_id, span_id=b"late0000")
        await stage.ingest(Payload.from_bytes(Signal.TRACES, late.SerializeToString()))
        lease = await export.lease(1_000_000)
        requests = [ExportTraceServiceRequest.FromString(part) for part in lease.bodies]
        await store.close()
        return requests, kept_id

    requests, kept_id = asyncio.run(scenario())
    groups = [group for request in requests for group in request.resource_spans]
    spans = [span for group in groups for scope in group.scope_spans for span in scope.spans]
    assert len({span.trace_id for span in spans}) == 3 and len(spans) == 7  # 3 kept traces of 2, one late span
    assert any(span.span_id == b"late0000" and span.trace_id == kept_id for span in spans)
    assert all(any(kv.key == "tagged" for kv in group.resource.attributes) for group in groups)


def test_spans_of_one_trace_that_came_with_other_metadata_leave_with_their_own_after_later_processors(tmp_path):
    """A kept trace whose spans came in requests of two batch keys (metadata_keys: two tenants)
    is exported under each request's key, with later processors as without them."""
    async def scenario() -> list[set[bytes]]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path, clock, "5s")
        stage.attach(store, [export], [_Tag()])
        trace_id = b"\x07" * 16
        for tenant in (b"tenant-a", b"tenant-b"):
            request = ExportTraceServiceRequest()
            span = request.resource_spans.add().scope_spans.add().spans.add(trace_id=trace_id, span_id=tenant[-1:] * 8)
            span.status.code = Status.STATUS_CODE_ERROR
            await stage.ingest(Payload.from_bytes(Signal.TRACES, request.SerializeToString()), batch_key=tenant)
        clock.now += 6
        await stage.decide_due()
        leases = []  # a lease holds records of one batch key
        for _ in range(3):
            lease = await export.lease(1_000_000)
            if lease is None or not lease.bodies:
                break
            leases.append({span.span_id for body in lease.bodies
                           for group in ExportTraceServiceRequest.FromString(body).resource_spans
                           for scope in group.scope_spans for span in scope.spans})
            await export.ack(lease)
            if not export.stored.entries:
                break
        await store.close()
        return leases

    assert sorted(map(sorted, asyncio.run(scenario()))) == [[b"a" * 8], [b"b" * 8]]


def test_a_kept_part_sliced_at_the_wrong_place_is_quarantined_not_sent():
    """Without processors after tail_sampling, kept parts go out as stored: their content was
    validated when the record was written or recovered, so what is checked is that the part is
    whole resource groups end to end. A part cut one byte off, or running over the next part's
    first byte, is quarantined and never sent; a sound one is sent."""
    from edgeagent.processors.tail_sampling.later import LaterProcessors
    from edgeagent.processors.tail_sampling.quarantine import Quarantine

    trace_id = b"\x06" * 16
    good = _traces_request([trace_id], spans=2)
    rows = {trace_id: [(b"record-1", b"", 2, good), (b"record-2", b"", 2, good[1:]),
                       (b"record-3", b"", 2, good + good[:1]), (b"record-4", b"", 2, good[:-1])]}
    quarantine = Quarantine("tail_sampling")
    out = LaterProcessors([]).exports({trace_id: True}, rows, {}, frozenset(), quarantine)
    assert [(body, items) for body, items, _ in out] == [(good, 2)]
    assert sorted(quarantine.snapshot()[1]) == [key + trace_id for key in (b"record-2", b"record-3", b"record-4")]


def test_a_kept_part_that_does_not_parse_before_later_processors_is_quarantined_with_its_bytes():
    """Kept parts that were not parsed for their decision (late spans of a trace being decided)
    are parsed for the processors after tail_sampling; one that does not parse goes to the
    dead-letter store as a part, its bytes kept, as elsewhere (not as a record key that does
    not exist, which quarantines nothing)."""
    from edgeagent.processors.tail_sampling.later import LaterProcessors
    from edgeagent.processors.tail_sampling.quarantine import Quarantine

    trace_id = b"\x05" * 16
    good = _traces_request([trace_id], spans=1)
    bad = b"\x0f" + good  # wire type 7: no protobuf parser takes it
    quarantine = Quarantine("tail_sampling")
    rows = {trace_id: [(b"record-1", b"", 1, good), (b"record-2", b"", 1, bad)]}
    out = LaterProcessors([_Tag()]).exports({trace_id: True}, rows, {}, frozenset(), quarantine)
    assert sum(items for _, items, _ in out) == 1
    records, parts = quarantine.snapshot()
    assert not records and list(parts) == [b"record-2" + trace_id] and parts[b"record-2" + trace_id][1] == bad


def test_shutdown_while_a_round_is_under_way_lets_it_finish_before_dropping_the_rest(tmp_path):
    """A round stopped half way left what it had started: its trace neither exported nor dropped,
    or, once its move was submitted (the writer commits it anyway), an index that no longer
    matched the records, so dropping the pending traces quarantined a sound record."""
    async def scenario() -> tuple[list[tuple[bytes, bytes]], int, int]:
        clock = Clock()
        store = QueueStore(str(tmp_path))
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({
            "decision_wait": "10s", "decision_wait_after_root_received": "1s",
            "drop_pending_traces_on_shutdown": True, "policies": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
        stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
        stage.attach(store, [export], [])
        store.start()
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        for trace_id, parent in ((b"\x0a" * 16, b""), (b"\x0b" * 16, b"\x01" * 8)):  # a root span, and not
            spans.add(trace_id=trace_id, span_id=trace_id[:8], parent_span_id=parent).status.code = 2
        await stage.ingest(Payload.from_bytes(Signal.TRACES, request.SerializeToString()))
        await stage.start()
        clock.now += 2  # the trace with its root is due; the other is not
        stage._wake.set()
        for _ in range(1000):  # bounded: the round starts within a few turns of the loop
            if stage._deciding:
                break
            await asyncio.sleep(0)
        await stage.shutdown()
        exported = await _exported_spans(export)
        left = sum(1 for _ in store.scan(stage.table))
        await store.close()
        return exported, store.deadletter_entries, left

    exported, dead_letters, left = asyncio.run(scenario())
    assert (exported, dead_letters, left) == ([(b"\x0a" * 16, b"\x0a" * 8)], 0, 0)


def test_a_request_cancelled_while_its_record_is_committed_is_still_buffered_and_decided(tmp_path):
    """A client's deadline or a reset stream cancels ingest; the writer commits the record anyway.
    It must be indexed and its traces buffered, not left on disk unseen until a restart (then
    decided apart from the rest of their traces, or a second time after the client's retry)."""
    async def scenario() -> list[tuple[bytes, bytes]]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path, clock, "5s")
        trace_id = b"\x0c" * 16
        ingest = asyncio.create_task(stage.ingest(Payload.from_bytes(Signal.TRACES, _traces_request([trace_id], 1))))
        await asyncio.sleep(0)  # it runs up to its commit
        ingest.cancel()
        await asyncio.gather(ingest, return_exceptions=True)
        await store.atomic(lambda writer: None)  # the writer commits in order: the record is durable
        clock.now += 6
        await _decide_all(stage)
        exported = await _exported_spans(export)
        await store.close()
        return exported

    assert asyncio.run(scenario()) == [(b"\x0c" * 16, b"\x01" * 8)]


def _traces_request(trace_ids: list[bytes], spans: int = 2) -> bytes:
    """Every trace with an error span (status_code keeps them all), `spans` spans each."""
    request = ExportTraceServiceRequest()
    group = request.resource_spans.add()
    scope_spans = group.scope_spans.add(scope={"name": "test"}).spans
    for trace_id in trace_ids:
        for index in range(spans):
            span = scope_spans.add(trace_id=trace_id, span_id=bytes([index + 1]) * 8, name=f"span-{index}")
            span.status.code = Status.STATUS_CODE_ERROR
    return request.SerializeToString()


async def _decide_all(stage: SamplingStage) -> None:
    """Rounds until no trace is pending (bounded: a test's traces take a few)."""
    for _ in range(10):
        if not stage.pending_traces():
            return
        await stage.decide_due()


async def _exported_spans(export) -> list[tuple[bytes, bytes]]:
    if not export.stored.entries:
        return []
    lease = await export.lease(1_000_000)
    merged = ExportTraceServiceRequest()
    for body in lease.bodies:
        merged.MergeFromString(body)
    await export.ack(lease)  # delivered: not handed out again after a restart
    return sorted((span.trace_id, span.span_id) for group in merged.resource_spans
                  for scope in group.scope_spans for span in scope.spans)


def test_a_record_partly_decided_keeps_only_its_pending_traces_across_a_restart(tmp_path):
    """A buffer record holds a request's parts of several traces; when one is decided before the
    others, a crash after that move must neither lose the others nor send the decided one twice."""
    early, first, second = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16

    async def scenario() -> list[tuple[bytes, bytes]]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path / "q", clock, "5s")
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _traces_request([early], spans=1)))
        clock.now += 3
        # one record: more of `early` (due in 2 s) and two traces due in 5 s
        late_part = ExportTraceServiceRequest.FromString(_traces_request([early, first, second]))
        late_part.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x09" * 8
        await stage.ingest(Payload.from_bytes(Signal.TRACES, late_part.SerializeToString()))
        clock.now += 2.5
        assert await stage.decide_due() == 1  # `early` only
        before = await _exported_spans(export)
        await store.close()  # as a kill: nothing else runs; the stage is not shut down

        stage, store, export = await _stage(tmp_path / "q", clock, "5s")
        await stage.start()
        clock.now += 6  # restarted traces wait decision_wait from when they were stored
        await _decide_all(stage)
        after = await _exported_spans(export)
        await stage.shutdown()
        await store.close()
        return before + after

    spans = asyncio.run(scenario())
    assert spans == sorted(set(spans))  # none twice
    assert [trace_id for trace_id, _ in spans].count(early) == 3
    assert {trace_id for trace_id, _ in spans} == {early, first, second} and len(spans) == 7


def test_a_request_with_late_spans_of_decided_traces_buffers_only_its_new_traces_parts(tmp_path):
    """Late spans of a kept trace go to export as they came, those of a dropped one nowhere;
    the record holds the new trace's part alone, cut from after the others' parts,
    so after a restart only the new trace is pending and is kept with its spans once."""
    kept, new, dropped = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16

    def request(errors: dict[bytes, bool]) -> bytes:
        message = ExportTraceServiceRequest()
        spans = message.resource_spans.add().scope_spans.add(scope={"name": "test"}).spans
        for trace_id, error in errors.items():
            for index in range(2):
                span = spans.add(trace_id=trace_id, span_id=bytes([trace_id[0], index, len(errors)]) * 2 + b"ab")
                span.status.code = Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK
        return message.SerializeToString()

    async def scenario() -> tuple[list[tuple[bytes, bytes]], int, list[tuple[bytes, bytes]]]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path / "q", clock, "5s")
        await stage.ingest(Payload.from_bytes(Signal.TRACES, request({kept: True, dropped: False})))
        clock.now += 6
        await stage.decide_due()
        first = await _exported_spans(export)
        await stage.ingest(Payload.from_bytes(Signal.TRACES, request({dropped: True, kept: False, new: True})))
        late = await _exported_spans(export)
        await store.close()  # as a kill

        stage, store, export = await _stage(tmp_path / "q", clock, "5s")
        await stage.start()
        pending = stage.pending_traces()
        clock.now += 6
        await stage.decide_due()
        after = await _exported_spans(export)
        await stage.shutdown()
        await store.close()
        return first + late, pending, after

    before, pending, after = asyncio.run(scenario())
    assert [trace_id for trace_id, _ in before] == [kept] * 4  # its two spans, then its two late ones
    assert pending == 1
    assert [trace_id for trace_id, _ in after] == [new] * 2


def test_buffer_records_of_the_earlier_layout_are_decided_after_an_upgrade(tmp_path):
    """Earlier releases stored one record per trace part, keyed by trace id + sequence."""
    trace_id = b"\x07" * 16

    async def scenario() -> list[tuple[bytes, bytes]]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path / "q", clock, "5s")
        old_key = trace_id + (41).to_bytes(8, "big")
        await store.atomic(lambda writer: writer.put(stage.table, old_key, Signal.TRACES,
                                                     _traces_request([trace_id], spans=3), 3, compress=False))
        await stage.start()
        clock.now += 6
        await stage.decide_due()
        spans = await _exported_spans(export)
        await stage.shutdown()
        await store.close()
        return spans

    spans = asyncio.run(scenario())
    assert [span_trace for span_trace, _ in spans] == [trace_id] * 3


def test_a_trace_whose_root_span_came_is_decided_after_decision_wait_after_root_received(tmp_path):
    """Ingest reads whether a part holds a root span only when this setting asks for it."""
    async def scenario() -> tuple[int, int]:
        clock = Clock()
        store = QueueStore(str(tmp_path))
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({
            "decision_wait": "30s", "decision_wait_after_root_received": "2s", "num_traces": 1000, "policies": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
        stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
        stage.attach(store, [export], [])
        store.start()
        with_root = ExportTraceServiceRequest.FromString(_traces_request([b"\x04" * 16], spans=2))
        await stage.ingest(Payload.from_bytes(Signal.TRACES, with_root.SerializeToString()))  # no parents: roots
        without = ExportTraceServiceRequest.FromString(_traces_request([b"\x05" * 16], spans=2))
        for span in without.resource_spans[0].scope_spans[0].spans:
            span.parent_span_id = b"\x09" * 8
        await stage.ingest(Payload.from_bytes(Signal.TRACES, without.SerializeToString()))
        clock.now += 3
        decided = await stage.decide_due()
        left = len(stage.buffer)
        await store.close()
        return decided, left

    assert asyncio.run(scenario()) == (1, 1)


class _Counts:
    """A metrics sink that keeps what counters were given (the sampler's MetricsSink)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, tuple[str, ...]], float] = {}

    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...]):
        counts = self.counts

        class Counter:
            def inc(self, amount: float, *labels: str) -> None:
                counts[name, labels] = counts.get((name, labels), 0) + amount
        return Counter()

    def gauge(self, *args) -> None:
        return None


class _Host:
    def __init__(self) -> None:
        self.metrics = _Counts()


def test_a_policy_that_fails_to_evaluate_is_counted_as_otelcol_counts_it_not_as_a_decision(tmp_path):
    failing = {"name": "status", "type": "ottl_condition", "ottl_condition": {
        "error_mode": "propagate", "span": ['Int(attributes["http.status_code"]) > 499']}}
    errors = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}

    async def scenario() -> dict[tuple[str, tuple[str, ...]], float]:
        clock, host = Clock(), _Host()
        store = QueueStore(str(tmp_path))
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({"decision_wait": "5s", "policies": [failing, errors]})
        stage = SamplingStage("tail_sampling", config, host=host, clock=clock)
        stage.attach(store, [export], [])
        store.start()
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        for number in range(4):  # "oops" is no number: the condition fails on every trace
            span = spans.add(trace_id=bytes([number + 1]) * 16, span_id=b"s" * 8, name="get")
            span.attributes.add(key="http.status_code").value.string_value = "oops"
        await stage.ingest(Payload.from_bytes(Signal.TRACES, request.SerializeToString()))
        clock.now += 6
        for _ in range(100):
            if not await stage.decide_due():
                break
        await store.close()
        return host.metrics.counts

    counts = asyncio.run(scenario())
    prefix = "otelcol_processor_tail_sampling_"
    assert counts[prefix + "sampling_policy_evaluation_error", ("tail_sampling",)] == 4
    assert counts[prefix + "count_traces_sampled", ("tail_sampling", "errors", "false")] == 4
    assert not any(labels[1:2] == ("status",) for name, labels in counts if name.endswith("count_traces_sampled"))


def _timed_request(spans: list[tuple[bytes, int, int]]) -> bytes:
    """One span per (trace id, start, end), in that order."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add(scope={"name": "test"}).spans
    for index, (trace_id, start, end) in enumerate(spans):
        scope_spans.add(trace_id=trace_id, span_id=bytes([index + 1]) * 8, name=f"span-{index}",
                        start_time_unix_nano=start, end_time_unix_nano=end)
    return request.SerializeToString()


def test_latency_is_judged_on_the_times_read_as_spans_arrived_also_after_a_restart(tmp_path):
    """A latency policy reads each trace's earliest start and latest end as its spans arrive (no
    parsing at decision time), over every request the trace came in; after a restart they are
    read again from the buffer records. A trace with an unset start is judged span by span."""
    slow, quick, unset = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
    ms = 1_000_000
    t0 = 1_700_000_000_000 * ms

    async def scenario(restart: bool) -> tuple[dict, set[bytes]]:
        clock = Clock()
        store = QueueStore(str(tmp_path / str(restart)))
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({"decision_wait": "5s", "num_traces": 1000, "policies": [
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}}]})
        stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
        stage.attach(store, [export], [])
        store.start()
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _timed_request(
            [(slow, t0 + 5 * ms, t0 + 10 * ms), (quick, t0, t0 + 400 * ms), (unset, t0 + 200 * ms, t0 + 300 * ms)])))
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _timed_request(
            [(slow, t0, t0 + 1500 * ms), (quick, t0 + 100 * ms, t0 + 900 * ms), (unset, 0, t0 + 250 * ms)])))
        if restart:
            await store.close()  # as a kill
            stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
            store = QueueStore(str(tmp_path / str(restart)))
            store.open()
            export = store.queue("otlphttp/traces", Signal.TRACES)
            stage.attach(store, [export], [])
            store.start()
            await stage.start()
        times = {trace_id: pending[TIMES] for trace_id, pending in stage.buffer.traces.items()}
        clock.now += 6
        await _decide_all(stage)
        kept = {trace_id for trace_id, _ in await _exported_spans(export)}
        await stage.shutdown()
        await store.close()
        return times, kept

    for restart in (False, True):
        times, kept = asyncio.run(scenario(restart))
        assert times == {slow: (t0, t0 + 1500 * ms), quick: (t0, t0 + 900 * ms), unset: None}, restart
        # unset: otelcol's running duration takes the unset start as 0, so the trace lasts for ages;
        # its set starts alone would say 100 ms
        assert kept == {slow, unset}, restart


def test_what_memory_holds_of_a_pending_trace_is_nothing_the_collector_walks(tmp_path):
    """A busy stage holds tens of thousands of pending traces: an object the garbage collector
    tracks per trace made each of its full passes walk them all (5-8 % of the CPU)."""
    import gc

    async def scenario() -> list[bool]:
        stage, store, _ = await _stage(tmp_path, Clock(), "30s")
        rng = random.Random(4)
        for _ in range(2):
            await stage.ingest(Payload.from_bytes(Signal.TRACES, _request(50, rng, spans_per_trace=2)))
        gc.collect()
        tracked = [gc.is_tracked(stage.buffer.traces[trace_id]) or gc.is_tracked(stage.index.traces[trace_id])
                   for trace_id in stage.buffer.traces]
        await store.close()
        return tracked

    tracked = asyncio.run(scenario())
    assert len(tracked) == 100 and not any(tracked)


def test_only_traces_a_policy_may_read_are_read_back_and_the_decisions_stay_right(tmp_path, monkeypatch):
    """With status_code, a trace none of whose spans holds an error code's bytes is decided on
    what the buffer knows of it: its record is deleted unread. Kept traces are read to go out."""
    async def scenario() -> tuple[set[bytes], set[bytes], set[bytes], int]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path, clock, "5s")
        asked: set[bytes] = set()
        read_records = stage._read

        async def spying(trace_ids, more=(), within=None, read=None):
            asked.update(trace_ids)
            return await read_records(trace_ids, more, within, read)
        monkeypatch.setattr(stage, "_read", spying)
        rng = random.Random(8)
        bodies = [_request(30, rng, spans_per_trace=3) for _ in range(3)]  # every third trace has an error
        requests = [ExportTraceServiceRequest.FromString(body) for body in bodies]
        errors = {span.trace_id for request in requests for group in request.resource_spans
                  for scope in group.scope_spans for span in scope.spans
                  if span.status.code == Status.STATUS_CODE_ERROR}
        for body in bodies:
            await stage.ingest(Payload.from_bytes(Signal.TRACES, body))
        clock.now += 6
        while await stage.decide_due():
            pass
        kept = {trace_id for trace_id, _ in await _exported_spans(export)}
        left = len(stage.index)
        await store.close()
        return errors, kept, asked, left

    errors, kept, asked, left = asyncio.run(scenario())
    assert len(errors) == 30 and kept == errors
    assert asked == errors  # the 60 others were not read
    assert left == 0  # every record deleted, read or not


def test_a_policy_that_reads_spans_it_said_it_would_not_makes_the_stage_read_every_trace(tmp_path, monkeypatch):
    async def scenario() -> tuple[set[bytes], set[bytes], bool]:
        clock = Clock()
        store = QueueStore(str(tmp_path))
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({"decision_wait": "5s", "num_traces": 1000, "policies": [
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1, "upper_threshold_ms": 10_000}}]})
        stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
        stage.attach(store, [export], [])
        store.start()
        monkeypatch.setattr(stage.policies[0].policy, "reads_bytes", lambda trace: False)  # a wrong answer
        ms = 1_000_000
        slow, quick = b"\x01" * 16, b"\x02" * 16
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _timed_request(
            [(slow, 10 * ms, 20 * ms), (quick, 10 * ms, 10 * ms + 1)])))
        clock.now += 6
        while await stage.decide_due():
            pass
        kept = {trace_id for trace_id, _ in await _exported_spans(export)}
        await store.close()
        return kept, {slow}, stage._read_all

    kept, expected, read_all = asyncio.run(scenario())
    assert kept == expected and read_all


def _spans_request(spans: list[tuple[bytes, bool]]) -> bytes:
    """One span per (trace id, whether it is an error), in that order."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add(scope={"name": "test"}).spans
    for index, (trace_id, error) in enumerate(spans):
        span = scope_spans.add(trace_id=trace_id, span_id=bytes([index + 1]) * 8, name=f"span-{index}")
        if error:
            span.status.code = Status.STATUS_CODE_ERROR
    return request.SerializeToString()


def test_one_request_routes_each_trace_by_what_is_known_of_it(tmp_path):
    """In one request: spans of a kept trace go to export, of a dropped one are counted, of a
    buffered one join it, of new ones are buffered; of a trace decided while the request was
    being committed they are settled by the next tick, of one being decided by the next round."""
    kept, dropped, buffered, *new = (bytes([n]) * 16 for n in range(1, 10))

    async def scenario() -> tuple:
        clock, host = Clock(), _Host()
        store = QueueStore(str(tmp_path))
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({"decision_wait": "5s", "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
        stage = SamplingStage("tail_sampling", config, host=host, clock=clock)
        stage.attach(store, [export], [])
        store.start()
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _spans_request([(kept, True), (dropped, False)])))
        clock.now += 6
        await stage.decide_due()
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _spans_request([(buffered, False)] * 2)))
        exported_before = export.items
        for spans in ([(kept, False), (dropped, True), (new[0], False)],  # none buffered
                      [(dropped, True), (buffered, True), (new[1], True)]):
            await stage.ingest(Payload.from_bytes(Signal.TRACES, _spans_request(spans)))
        late_kept = export.items - exported_before
        first = (dict(stage.buffer.traces), dict(stage.index.traces))

        async def while_committing(change) -> None:  # runs while the ingest beside it awaits its commit
            change()

        def decided() -> None:
            stage.cache.record(new[2], True)  # decided meanwhile
            stage.cache.record(buffered, False)  # another replica's word on a buffered trace: it stays buffered
        ingest = stage.ingest(Payload.from_bytes(Signal.TRACES, _spans_request(
            [(new[2], False), (buffered, False), (new[4], False)])))
        await asyncio.gather(asyncio.create_task(ingest), while_committing(decided))
        ingest = stage.ingest(Payload.from_bytes(Signal.TRACES, _spans_request([(new[3], False), (new[5], False)])))
        await asyncio.gather(asyncio.create_task(ingest), while_committing(lambda: stage._deciding.add(new[3])))
        spans_of_buffered = stage.buffer.traces[buffered][SPANS]
        second = (set(stage.buffer.traces), spans_of_buffered, dict(stage._unsettled), set(stage._late_records))
        await store.close()
        return late_kept, first, second, host.metrics.counts

    late_kept, (traces, index), (held, spans_of_buffered, unsettled, late), counts = asyncio.run(scenario())
    assert late_kept == 1
    prefix = "otelcol_processor_tail_sampling_"
    assert counts[prefix + "sampling_late_spans", ("tail_sampling", "true")] == 1
    assert counts[prefix + "sampling_late_spans", ("tail_sampling", "false")] == 2
    assert counts[prefix + "new_trace_id_received", ("tail_sampling",)] == 2 + 1 + 2 + 1 + 1
    assert list(traces) == [buffered, new[0], new[1]]
    assert [trace[SPANS] for trace in traces.values()] == [3, 1, 1]
    assert [len(index[trace_id]) for trace_id in traces] == [2, 1, 1] and set(index) == set(traces)
    assert held == {buffered, new[0], new[1], new[4], new[5]} and spans_of_buffered == 4
    assert unsettled == {new[2]: True} and late == {new[3]}


def test_deciding_chunks_bound_the_traces_read_back_not_those_decided_unread():
    from edgeagent.processors.tail_sampling.reads import TRACES_PER_DECISION as _TRACES_PER_DECISION
    from edgeagent.processors.tail_sampling.reads import chunks as _chunks

    read_at = [3, *range(10, 10 + 2 * _TRACES_PER_DECISION), 400]
    chunks = _chunks(read_at, 1000)
    assert [start for start, _, _ in chunks] == [0, *(end for _, end, _ in chunks[:-1])]  # contiguous
    assert chunks[-1][1] == 1000
    assert [reading for _, _, reading in chunks] == [read_at[i:i + _TRACES_PER_DECISION]
                                                     for i in range(0, len(read_at), _TRACES_PER_DECISION)]
    assert all(start <= at < end for start, end, reading in chunks for at in reading)
    assert _chunks([], 500) == [(0, 500, [])]
    assert _chunks([499], 500) == [(0, 500, [499])]


def test_spans_arriving_while_a_round_settles_earlier_decisions_join_their_trace_being_decided(tmp_path):
    """A round takes its due traces out of the buffer, then settles the decisions it could not
    move before: spans of a due trace that arrive during that wait must follow its decision,
    not start it again as a new trace (decided twice, the second time on the late spans alone)."""
    trace_id, earlier = b"\x04" * 16, b"\x05" * 16

    async def scenario() -> tuple[bool, list[tuple[bytes, bytes]]]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path, clock, "5s")
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _traces_request([trace_id], spans=2)))
        clock.now += 6
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _traces_request([earlier], spans=1)))
        stage.buffer.remove(earlier)  # decided, its move to be retried by the next round
        stage._unsettled[earlier] = False
        round_task = asyncio.create_task(stage.decide_due())
        await asyncio.sleep(0)  # the round took the trace and waits on the retried move's read
        late = ExportTraceServiceRequest.FromString(_traces_request([trace_id], spans=1))
        late.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x09" * 8
        await stage.ingest(Payload.from_bytes(Signal.TRACES, late.SerializeToString()))
        buffered_again = trace_id in stage.buffer
        await round_task
        clock.now += 6
        await _decide_all(stage)
        spans = await _exported_spans(export)
        await store.close()
        return buffered_again, spans

    buffered_again, spans = asyncio.run(scenario())
    assert not buffered_again
    assert spans == [(trace_id, b"\x01" * 8), (trace_id, b"\x02" * 8), (trace_id, b"\x09" * 8)]


def test_kept_traces_decided_unread_go_out_whole_from_records_read_for_other_traces(tmp_path):
    """probabilistic keeps traces without reading them; status_code reads the ones with an error.
    Both kinds share records: a kept trace not read for its decision goes out from the bodies the
    round read for the others (or reads them), with every span, once."""
    async def scenario() -> tuple[int, list[tuple[bytes, bytes]]]:
        clock = Clock()
        store = QueueStore(str(tmp_path))
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({"decision_wait": "5s", "num_traces": 1000, "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "all", "type": "probabilistic", "probabilistic": {"sampling_percentage": 100}}]})
        stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
        stage.attach(store, [export], [])
        store.start()
        rng = random.Random(9)
        for _ in range(3):  # every third trace has an error: read for its decision; the others are not
            await stage.ingest(Payload.from_bytes(Signal.TRACES, _request(30, rng, spans_per_trace=3)))
        clock.now += 6
        while await stage.decide_due():
            pass
        left = len(stage.index)
        spans = await _exported_spans(export)
        await store.close()
        return left, spans

    left, spans = asyncio.run(scenario())
    assert left == 0 and len(spans) == len(set(spans)) == 270  # 90 traces of 3 spans, each once


def _late_span(trace_id: bytes, span_id: bytes, error: bool) -> Payload:
    late = ExportTraceServiceRequest.FromString(_traces_request([trace_id], spans=1))
    span = late.resource_spans[0].scope_spans[0].spans[0]
    span.span_id = span_id
    if not error:
        span.status.code = Status.STATUS_CODE_OK
    return Payload.from_bytes(Signal.TRACES, late.SerializeToString())


def test_spans_arriving_while_their_trace_is_moved_follow_its_decision_not_start_it_again(tmp_path):
    """A round records a trace's decision, then awaits its move. A request with more of the trace
    routed in that wait goes to a new record, committed after the move: the trace must follow
    its decision (settled by the next tick), not be buffered as a new trace and decided again on
    the late spans alone, which flips a kept trace to dropped."""
    trace_id = b"\x06" * 16

    async def scenario() -> tuple[bool, bool | None, list[tuple[bytes, bytes]]]:
        clock = Clock()
        stage, store, export = await _stage(tmp_path, clock, "5s")
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _traces_request([trace_id], spans=2)))
        clock.now += 6
        round_task = asyncio.create_task(stage.decide_due())
        for _ in range(1000):  # until the round has decided: its move is under way
            if stage.cache.lookup(trace_id) is not None:
                break
            await asyncio.sleep(0)
        assert trace_id in stage._deciding
        late = asyncio.create_task(stage.ingest(_late_span(trace_id, b"\x09" * 8, error=False)))
        await round_task
        await late
        buffered_again = trace_id in stage.buffer
        clock.now += 6
        await _decide_all(stage)
        await stage.ingest(_late_span(trace_id, b"\x0a" * 8, error=False))  # after all: still kept
        spans = await _exported_spans(export)
        decision = stage.cache.lookup(trace_id)
        await store.close()
        return buffered_again, decision, spans

    buffered_again, decision, spans = asyncio.run(scenario())
    assert not buffered_again and decision is True
    assert spans == [(trace_id, b"\x01" * 8), (trace_id, b"\x02" * 8), (trace_id, b"\x09" * 8),
                     (trace_id, b"\x0a" * 8)]


def test_spans_of_a_trace_evicted_early_join_its_early_decision(tmp_path):
    """A trace evicted by num_traces waits in the early list for the next round: more of its spans
    arriving meanwhile must be decided with it, not buffer it again as a new trace that is
    decided a second time (with none of its records left) and flips kept to dropped."""
    first, second = b"\x07" * 16, b"\x08" * 16

    async def scenario() -> tuple[bool, bool | None, list[tuple[bytes, bytes]]]:
        store = QueueStore(str(tmp_path))
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        config = TailSamplingConfig.model_validate({
            "decision_wait": "5s", "num_traces": 1, "stress_relief": {"mode": "never"},
            "decision_cache": {"sampled_cache_size": 100},  # both traces are kept: the id stays known
            "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
        clock = Clock()
        stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
        stage.attach(store, [export], [])
        store.start()
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _traces_request([first], spans=1)))
        await stage.ingest(Payload.from_bytes(Signal.TRACES, _traces_request([second], spans=1)))  # evicts first
        assert first not in stage.buffer and stage.pending_traces() == 2
        await stage.ingest(_late_span(first, b"\x09" * 8, error=False))
        buffered_again = first in stage.buffer
        await stage.decide_due()
        clock.now += 6
        await _decide_all(stage)
        await stage.ingest(_late_span(first, b"\x0a" * 8, error=False))
        decision = stage.cache.lookup(first)
        spans = [span for span in await _exported_spans(export) if span[0] == first]
        await store.close()
        return buffered_again, decision, spans

    buffered_again, decision, spans = asyncio.run(scenario())
    assert not buffered_again and decision is True
    assert spans == [(first, b"\x01" * 8), (first, b"\x09" * 8), (first, b"\x0a" * 8)]


@pytest.mark.parametrize("number", range(len(HINT_POLICIES)))
def test_byte_searching_policies_decide_from_the_spans_also_after_a_restart(tmp_path, number):
    """status_code and the attribute policies decide by what the split found and confirmed as
    spans arrived (Trace.hints); after a restart that is found again in the buffer records, cut
    as they were stored. Either way each trace's decision is the policies' on its parsed spans,
    for requests in unusual protobuf (tests/sampler/policies/test_hint_exactness) and traces over
    several requests."""
    import yaml

    from sampler.policies import build_policies, decide
    from sampler.policies.config import PolicyConfig
    from sampler.split import split_by_trace
    from sampler.trace import Decision, Trace
    from tests.sampler.policies.test_hint_exactness import _request as unusual_request

    rng = random.Random(21)
    trace_ids = [rng.randbytes(16) for _ in range(40)]
    bodies = [unusual_request(rng, rng.sample(trace_ids, 3)) for _ in range(12)]
    batches: dict[bytes, list] = {}
    for body in bodies:
        for trace_id, part, _, _ in split_by_trace(ExportTraceServiceRequest.FromString(body)):
            batches.setdefault(trace_id, []).extend(part.resource_spans)

    async def scenario(policies: list[dict], restart: bool, directory: str) -> set[bytes]:
        clock = Clock()
        config = TailSamplingConfig.model_validate({"decision_wait": "5s", "num_traces": 1000, "policies": policies})

        def opened() -> tuple[QueueStore, Any, SamplingStage]:
            store = QueueStore(str(tmp_path / directory))
            store.open()
            export = store.queue("otlphttp/traces", Signal.TRACES)
            stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
            stage.attach(store, [export], [])
            store.start()
            return store, export, stage

        store, export, stage = opened()
        for body in bodies:
            await stage.ingest(Payload.from_bytes(Signal.TRACES, body))
        if restart:
            await store.close()  # as a kill
            store, export, stage = opened()
            await stage.start()
        clock.now += 6
        await _decide_all(stage)
        kept = {trace_id for trace_id, _ in await _exported_spans(export)}
        await stage.shutdown()
        await store.close()
        return kept

    policy = yaml.safe_load(HINT_POLICIES[number])
    policies = [policy, {"name": "all", "type": "always_sample"}] if policy["type"] == "drop" else [policy]
    named = build_policies([PolicyConfig.model_validate(item) for item in policies], lambda: 0.0)
    expected = {trace_id for trace_id, its in batches.items()
                if decide(named, Trace(trace_id, batches=its))[0] is Decision.SAMPLED}
    assert 0 < len(expected) < len(batches), policy["name"]
    for restart in (False, True):
        kept = asyncio.run(scenario(policies, restart, f"{number}-{restart}"))
        assert kept == expected, (policy["name"], restart)


def test_a_stage_stopped_for_a_reload_refuses_what_still_reaches_it_and_its_successor_decides_the_rest(tmp_path):
    """A reload stops the stage while receivers it keeps still hand requests to it until the new
    stage starts. A request the stopped stage accepted was written to the buffer after its
    successor read the buffer back: acknowledged (a Kafka offset committed), then decided by no
    stage until a restart. The stopped stage refuses it as retryable, and the successor decides
    what was accepted before the stop."""
    async def scenario() -> tuple[str, list[tuple[bytes, bytes]]]:
        clock = Clock()
        old, store, export = await _stage(tmp_path, clock, "5s")
        await old.start()
        accepted = asyncio.create_task(old.ingest(Payload.from_bytes(Signal.TRACES,
                                                                     _traces_request([b"\x0d" * 16], 1))))
        await asyncio.sleep(0)  # up to its commit
        await old.shutdown()
        new = SamplingStage("tail_sampling", old.config, host=None, clock=clock)
        new.attach(store, [export], [])
        await new.start()
        await accepted
        try:
            await old.ingest(Payload.from_bytes(Signal.TRACES, _traces_request([b"\x0e" * 16], 1)))
            outcome = "accepted"
        except RetryableError:
            outcome = "refused"
        clock.now += 6
        await _decide_all(new)
        exported = await _exported_spans(export)
        await new.shutdown()
        await store.close()
        return outcome, exported

    outcome, exported = asyncio.run(scenario())
    assert (outcome, exported) == ("refused", [(b"\x0d" * 16, b"\x01" * 8)])
