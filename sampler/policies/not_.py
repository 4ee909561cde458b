"""`not`: the opposite of one sub-policy (`not_sub_policy`): Sampled becomes NotSampled and the
reverse; an error passes through unchanged, as in otelcol."""

from __future__ import annotations

from sampler.policies.base import Evaluator, reads_bytes
from sampler.trace import Decision, Trace


class Not:
    def __init__(self, subpolicy: Evaluator):
        self.subpolicy = subpolicy

    def reads_bytes(self, trace: Trace) -> bool:
        return reads_bytes(self.subpolicy, trace)

    def evaluate(self, trace: Trace) -> Decision:
        decision = self.subpolicy.evaluate(trace)
        if decision is Decision.SAMPLED:
            return Decision.NOT_SAMPLED
        if decision is Decision.NOT_SAMPLED:
            return Decision.SAMPLED
        return decision
