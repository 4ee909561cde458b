"""`composite`: sub-policies, each with a share of `max_total_spans_per_second`.

Exactly as otelcol:
  * Sub-policies (`composite_sub_policy`) are evaluated in the order they are defined; the
    first to sample the trace decides, and no later one is tried.
  * That sub-policy keeps the trace only when its spans counted in the current second, plus
    the trace's spans, stay within its share and within max_total_spans_per_second; otherwise
    the trace is not sampled (and nothing is counted). The cap applies to each sub-policy's
    count: otelcol does not add the sub-policies' counts up.
  * A share is `percent` of max_total_spans_per_second from `rate_allocation`; a sub-policy
    without one (or with percent 0 or below) gets max_total_spans_per_second / number of sub-policies.
    Shares are truncated to whole spans.
  * Counts restart when the clock enters a new whole second.
otelcol does not read `policy_order` (nor does this; a warning says so at load).
A sub-policy's error (Decision.ERROR) is the answer: otelcol passes it up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sampler.policies.base import Evaluator, reads_bytes
from sampler.policies.config import CompositeConfig
from sampler.trace import Decision, Trace


@dataclass
class Share:
    name: str
    policy: Evaluator
    spans_per_second: int
    spans_this_second: int = 0


def shares(config: CompositeConfig) -> dict[str, int]:
    """Spans per second for each sub-policy by name, as otelcol allocates them."""
    total = float(config.max_total_spans_per_second)
    default = total / len(config.composite_sub_policy) if config.composite_sub_policy else 0.0
    percents = {allocation.policy: allocation.percent for allocation in config.rate_allocation}
    allocated = {}
    for sub in config.composite_sub_policy:
        percent = percents.get(sub.name, 0)
        allocated[sub.name] = int(percent / 100 * total) if percent > 0 else int(default)
    return allocated


class Composite:
    def __init__(self, max_total_spans_per_second: int, subpolicies: Sequence[Share], clock: Callable[[], float]):
        self.max_total = max_total_spans_per_second
        self.subpolicies = tuple(subpolicies)
        self.clock = clock
        self.second: int | None = None

    def reads_bytes(self, trace: Trace) -> bool:
        return any(reads_bytes(share.policy, trace) for share in self.subpolicies)

    def evaluate(self, trace: Trace) -> Decision:
        second = math.floor(self.clock())
        if second != self.second:
            self.second = second
            for share in self.subpolicies:
                share.spans_this_second = 0
        for share in self.subpolicies:
            decision = share.policy.evaluate(trace)
            if decision is Decision.ERROR:
                return decision  # otelcol passes a sub-policy's error up
            if decision is Decision.SAMPLED:
                counted = share.spans_this_second + trace.span_count
                if counted <= share.spans_per_second and counted <= self.max_total:
                    share.spans_this_second = counted
                    return Decision.SAMPLED
                return Decision.NOT_SAMPLED
        return Decision.NOT_SAMPLED
