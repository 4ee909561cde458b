"""rate_limiting and bytes_limiting: otelcol's token bucket (golang.org/x/time/rate) on a fake clock.

Each row is a policy and a sequence of steps: advance the clock by so many seconds, then offer a
trace of so many spans (or bytes), and the decision expected.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from sampler.policies import build_policy
from sampler.policies.bytes_limiting import traces_data_size
from sampler.policies.token_bucket import TokenBucket
from sampler.trace import Decision, Trace
from tests.sampler.policies.traces import SHORT, FakeClock, policy_config, span, spans_trace, trace


def run(snippet: str, steps: list[tuple[float, Trace, str]]) -> None:
    clock = FakeClock()
    policy = build_policy(policy_config(snippet), clock)
    for number, (advance, item, expected) in enumerate(steps):
        clock.advance(advance)
        assert policy.evaluate(item) is SHORT[expected], f"step {number}"


def spans(count: int) -> Trace:
    return spans_trace(*(span() for _ in range(count)))


RATE_ROWS = [
    pytest.param("{name: p, type: rate_limiting, rate_limiting: {spans_per_second: 10}}", [
        (0, spans(15), "S"),    # the bucket starts full: twice spans_per_second
        (0, spans(6), "N"),     # 5 left: a refused trace takes nothing
        (0, spans(5), "S"),
        (0.5, spans(5), "S"),   # half a second refills 5
        (0, spans(1), "N"),
        (60, spans(21), "N"),   # more than the bucket holds never passes
        (0, spans(20), "S"),
    ], id="default-burst"),
    pytest.param("{name: p, type: rate_limiting, rate_limiting: {spans_per_second: 100, burst_capacity: 10}}", [
        (0, spans(10), "S"),
        (0.05, spans(5), "S"),
        (0, spans(1), "N"),
        (3600, spans(11), "N"),
        (0, spans(10), "S"),
    ], id="burst-capacity"),
    pytest.param("{name: p, type: rate_limiting, rate_limiting: {spans_per_second: 1}}", [
        (0, spans(2), "S"),
        (-10, spans(1), "N"),   # a clock going backwards refills nothing
        (1, spans(1), "N"),     # counted from the last grant, not from the earlier reading
        (10, spans(1), "S"),
    ], id="clock-backwards"),
]


@pytest.mark.parametrize("snippet, steps", RATE_ROWS)
def test_rate_limiting_spends_spans_from_otelcols_token_bucket(snippet, steps):
    run(snippet, steps)


def test_trace_size_is_otelcols_traces_size_by_pdatas_sizer_not_protobufs():
    """ptrace.ProtoMarshaler.TracesSize, as otelcol's calculateTraceSize measures: pdata writes a
    span's ids, parent id and status, a resource and a scope though empty (sampler.sizing)."""
    # span: name 1+1+2, times 9 + 9, status 2, and the empty trace_id, span_id, parent_span_id 2 each: 30;
    # scope: an empty scope 2 + 1+1+30 = 34; resource spans: an empty resource 2 + 1+1+34 = 38; 1+1+38
    item = spans_trace(span())
    assert traces_data_size(item) == 40
    assert TracesData(resource_spans=item.batches).ByteSize() == 30  # protobuf's
    two = trace(item.batches[0], item.batches[0])
    assert traces_data_size(two) == 80
    assert traces_data_size(Trace(trace_id=bytes(16))) == 0


def test_bytes_limiting_spends_bytes_from_otelcols_token_bucket():
    small = spans_trace(span())
    large = spans_trace(*(span({"payload": "x" * 200}) for _ in range(5)))
    size_small, size_large = traces_data_size(small), traces_data_size(large)
    assert size_large > 4 * size_small
    rate = size_large  # bytes per second; the bucket holds twice that
    run(f"{{name: p, type: bytes_limiting, bytes_limiting: {{bytes_per_second: {rate}}}}}", [
        (0, large, "S"),
        (0, large, "S"),
        (0, small, "N"),
        (size_small / rate, small, "S"),   # refilled exactly what the small trace takes
        (0, small, "N"),
        (1, large, "S"),
    ])
    run(f"{{name: p, type: bytes_limiting, bytes_limiting: {{bytes_per_second: {rate}, "
        f"burst_capacity: {size_large - 1}}}}}", [
        (0, large, "N"),                   # larger than the burst capacity: never
        (0, small, "S"),
        (3600, large, "N"),
    ])


def test_a_shortfall_worth_less_than_a_nanosecond_still_passes_as_in_go():
    clock = FakeClock()
    policy = build_policy(policy_config(
        "{name: p, type: rate_limiting, rate_limiting: {spans_per_second: 1000000, burst_capacity: 4}}"), clock)
    assert policy.evaluate(spans(4)) is Decision.SAMPLED
    clock.advance(0.9999e-6)  # refills 0.9999 of a token: 1e-4 short, which Go waits 0.1 ns for, i.e. 0
    assert policy.evaluate(spans(1)) is Decision.SAMPLED


def unread(span_count: int) -> Trace:
    return Trace.unread(bytes(16), span_count, 0, None, None)


# (spans_per_second, burst_capacity): sub-nanosecond shortfalls at a million a second; above a
# billion a second, a whole token short is worth less than a nanosecond, yet a trace above the burst never passes
LIMITS = [(1, 0), (1, 3), (3, 0), (10, 4), (1000, 0), (1000, 50), (1_000_000, 4), (1_000_000, 0), (3_000_000_000, 2)]
STEPS = [0, 0, 0.0001, 0.01, 0.34, 1, 5, -2, 0.9999e-6, 1.0001e-6, 3.5e-6]  # seconds; a clock may go back


def twins(kind: str, rate: int, burst: int, clock: FakeClock) -> tuple[Any, Any]:
    """Two policies alike on one clock: one to evaluate trace by trace, one to evaluate rounds."""
    unit = "spans" if kind == "rate_limiting" else "bytes"
    snippet = f"{{name: p, type: {kind}, {kind}: {{{unit}_per_second: {rate}, burst_capacity: {burst}}}}}"
    return build_policy(policy_config(snippet), clock), build_policy(policy_config(snippet), clock)


def test_a_round_at_one_instant_grants_what_trace_by_trace_grants():
    """evaluate_many reads the clock once and spends tokens inline: it must grant exactly the traces
    that evaluate grants one by one at that instant, bursts exceeded, traces above the burst and
    shortfalls under a nanosecond included."""
    rng = random.Random(11)
    for _ in range(300):
        rate, burst = rng.choice(LIMITS)
        clock = FakeClock()
        one, many = twins("rate_limiting", rate, burst, clock)
        most = max(2, 2 * (burst or 2 * rate))
        for _ in range(rng.randint(1, 8)):
            clock.advance(rng.choice(STEPS))
            counts = [rng.choice([0, 1, 1, 2, 3, rng.randrange(most), most]) for _ in range(rng.choice([1, 5, 40]))]
            traces = [unread(count) for count in counts]
            assert many.evaluate_many(traces) == [one.evaluate(trace) for trace in traces], (rate, burst, counts)
            assert (many.bucket.tokens, many.bucket.last) == (one.bucket.tokens, one.bucket.last)


def test_bytes_limiting_over_a_round_grants_what_trace_by_trace_grants():
    rng = random.Random(12)
    traces = [spans_trace(*(span({"payload": "x" * rng.randrange(300)}) for _ in range(rng.randint(1, 3))))
              for _ in range(40)]
    rate = max(map(traces_data_size, traces))
    for burst in (0, rate // 2, 3 * rate):
        clock = FakeClock()
        one, many = twins("bytes_limiting", rate, burst, clock)
        for _ in range(30):
            clock.advance(rng.choice([0, 0.1, 0.5, 2, -1]))
            round_ = rng.sample(traces, rng.randint(1, len(traces)))
            assert many.evaluate_many(round_) == [one.evaluate(trace) for trace in round_]


@pytest.mark.parametrize("burst", [0, 1, 5])
def test_a_bucket_of_rate_zero_grants_its_burst_once_as_in_go(burst):
    clock = FakeClock()
    one, many = TokenBucket(0, burst, clock), TokenBucket(0, burst, clock)
    sizes = [2, 1, 3, 1, 1, 0, 1, 6]
    clock.advance(3600)
    granted = [one.allow(size) for size in sizes]
    assert many.allow_many(sizes) == granted
    assert sum(size for size, passed in zip(sizes, granted, strict=True) if passed) <= burst
