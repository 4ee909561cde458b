"""`drop`: drop a trace when every sub-policy (`drop_sub_policy`) samples it.

The sub-policies combine as `and` does (an error is the answer). A Dropped decision vetoes every other policy: drop
policies are evaluated before all others and the first Dropped ends the evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

from sampler.policies.and_ import all_sample, reads_bytes_in_turn
from sampler.policies.base import Evaluator
from sampler.trace import Decision, Trace


class Drop:
    def __init__(self, subpolicies: Sequence[Evaluator]):
        self.subpolicies = tuple(subpolicies)

    def reads_bytes(self, trace: Trace) -> bool:
        return reads_bytes_in_turn(self.subpolicies, trace)

    def evaluate(self, trace: Trace) -> Decision:
        decision = all_sample(self.subpolicies, trace)
        return Decision.DROPPED if decision is Decision.SAMPLED else decision
