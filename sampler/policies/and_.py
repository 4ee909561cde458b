"""`and`: sample a trace when every sub-policy (`and_sub_policy`) samples it.

Sub-policies are evaluated in order and the first NotSampled or InvertNotSampled ends it; an
InvertSampled counts as sampled. The answer is Sampled or NotSampled, never an inverted one.
A sub-policy's error (Decision.ERROR) ends it too and is the answer, as otelcol passes the
error up. Stateful sub-policies after a refusing one (a rate limiter) are not evaluated, so
they spend nothing on the trace, as in otelcol.
"""

from __future__ import annotations

from collections.abc import Sequence

from sampler.policies.base import Evaluator, evaluate_many, reads_bytes, refuses
from sampler.trace import Decision, Trace

REFUSALS = (Decision.NOT_SAMPLED, Decision.INVERTED_NOT_SAMPLED)


def all_sample(subpolicies: Sequence[Evaluator], trace: Trace) -> Decision:
    """SAMPLED when every sub-policy samples the trace; else NOT_SAMPLED, or ERROR, from the first
    that does not."""
    for policy in subpolicies:
        decision = policy.evaluate(trace)
        if decision in REFUSALS:
            return Decision.NOT_SAMPLED
        if decision is Decision.ERROR:
            return Decision.ERROR
    return Decision.SAMPLED


def all_sample_many(subpolicies: Sequence[Evaluator], traces: Sequence[Trace]) -> list[Decision]:
    """all_sample of each trace, sub-policy by sub-policy over the traces still in: each sub-policy
    sees the same traces in the same order as trace by trace, so a stateful one spends alike."""
    answers = [Decision.SAMPLED] * len(traces)
    live: Sequence[int] = range(len(traces))
    for policy in subpolicies:
        if not live:
            break
        results = evaluate_many(policy, [traces[index] for index in live] if len(live) < len(traces) else traces)
        still = []
        for index, decision in zip(live, results, strict=True):
            if decision in REFUSALS:
                answers[index] = Decision.NOT_SAMPLED
            elif decision is Decision.ERROR:
                answers[index] = Decision.ERROR
            else:
                still.append(index)
        live = still
    return answers


def reads_bytes_in_turn(subpolicies: Sequence[Evaluator], trace: Trace) -> bool:
    """reads_bytes of sub-policies evaluated in turn until one refuses (all_sample): one certain to
    refuse without reading ends what is read."""
    for policy in subpolicies:
        if refuses(policy, trace):
            return False
        if reads_bytes(policy, trace):
            return True
    return False


class And:
    def __init__(self, subpolicies: Sequence[Evaluator]):
        self.subpolicies = tuple(subpolicies)

    def reads_bytes(self, trace: Trace) -> bool:
        return reads_bytes_in_turn(self.subpolicies, trace)

    def evaluate(self, trace: Trace) -> Decision:
        return all_sample(self.subpolicies, trace)

    def evaluate_many(self, traces: Sequence[Trace]) -> list[Decision]:
        return all_sample_many(self.subpolicies, traces)
