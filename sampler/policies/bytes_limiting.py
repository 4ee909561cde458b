"""`bytes_limiting`: sample traces while the bytes sampled stay within `bytes_per_second`.

otelcol's token bucket: a trace takes as many tokens as its batches' size as otelcol's
ProtoMarshaler.TracesSize measures it (sampler.sizing: pdata's, not protobuf's); the bucket
refills at `bytes_per_second` (not at all at 0 or below) and holds `burst_capacity` (twice
`bytes_per_second` when 0 or below).

A round of traces (evaluate_many) is judged at one instant, the clock read once for all of them:
as evaluating them one by one at that instant would, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sampler.policies.config import BytesLimitingConfig
from sampler.policies.rate_limiting import BY_GRANTED
from sampler.policies.token_bucket import TokenBucket
from sampler.sizing import traces_size
from sampler.trace import Decision, Trace


def traces_data_size(trace: Trace) -> int:
    """ptrace's TracesSize of the trace's batches, as otelcol's calculateTraceSize. Its `raw`, the
    bytes they were parsed from, spare the walk over attributes when no key-value lacks a value."""
    return traces_size(trace.batches, trace.raw)


class BytesLimiting:
    def __init__(self, config: BytesLimitingConfig, clock: Callable[[], float]):
        self.bucket = TokenBucket(config.bytes_per_second, config.burst(), clock)

    def evaluate(self, trace: Trace) -> Decision:
        return Decision.SAMPLED if self.bucket.allow(traces_data_size(trace)) else Decision.NOT_SAMPLED

    def evaluate_many(self, traces: Sequence[Trace]) -> list[Decision]:
        """`evaluate` of each trace in turn, all at one instant (TokenBucket.allow_many)."""
        by_granted = BY_GRANTED
        return [by_granted[granted] for granted in self.bucket.allow_many(map(traces_data_size, traces))]
