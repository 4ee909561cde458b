"""`rate_limiting`: sample traces while the spans sampled stay within `spans_per_second`.

otelcol's token bucket: a trace takes as many tokens as it has spans; the bucket refills at
`spans_per_second` (not at all at 0 or below) and holds `burst_capacity` (twice `spans_per_second`
when 0 or below).

A round of traces (evaluate_many) is judged at one instant, the clock read once for all of them:
as evaluating them one by one at that instant would, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sampler.policies.base import never_reads
from sampler.policies.config import RateLimitingConfig
from sampler.policies.token_bucket import TokenBucket
from sampler.trace import Decision, Trace

BY_GRANTED = (Decision.NOT_SAMPLED, Decision.SAMPLED)  # indexed by whether the bucket granted the trace


class RateLimiting:
    def __init__(self, config: RateLimitingConfig, clock: Callable[[], float]):
        self.bucket = TokenBucket(config.spans_per_second, config.burst(), clock)

    reads_bytes = staticmethod(never_reads)  # it judges the trace by its span count

    def evaluate(self, trace: Trace) -> Decision:
        return Decision.SAMPLED if self.bucket.allow(trace.span_count) else Decision.NOT_SAMPLED

    def evaluate_many(self, traces: Sequence[Trace]) -> list[Decision]:
        """`evaluate` of each trace in turn, all at one instant (TokenBucket.allow_many)."""
        by_granted = BY_GRANTED
        return [by_granted[granted] for granted in self.bucket.allow_many([trace.span_count for trace in traces])]
