"""Tail-sampling policies, as otelcol's `tail_sampling` processor defines them.

One module per policy type (the YAML type name; `and_` and `not_` because `and` and `not` are
Python keywords), each a class with `evaluate(trace) -> Decision`. `build_policies` turns the
validated `policies:` list into evaluators; `decide` runs them on a trace and combines their
decisions into the final one, as otelcol's makeDecision does:

  1. Drop policies run first, whatever their place in the list, and the first Dropped stops
     the evaluation; with `sample_on_first_match` the first Sampled stops it too.
  2. Any Dropped: the trace is dropped.
  3. Else any InvertNotSampled (an invert_match policy that matched): not sampled.
  4. Else any Sampled: sampled.
  5. Else any InvertSampled, and no NotSampled: sampled.
  6. Else not sampled.
A policy that fails (Decision.ERROR: an ottl_condition with error_mode propagate) counts as
no decision at all and is absent from the returned decisions.

Time-based policies (rate_limiting, bytes_limiting, composite) read the clock given to
`build_policies`, so tests control time.

A trace may come unparsed (Trace.raw and a parse function): policies that can answer from its
bytes or its trace-level facts do so. A policy whose class says `reads_every_span = True`
(latency) will parse it anyway, so `decide` parses such a trace first, and no policy spends a
byte search on it. The attribute is optional: a policy without it changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from sampler.policies.always_sample import AlwaysSample
from sampler.policies.and_ import And
from sampler.policies.base import Evaluator, NamedPolicy
from sampler.policies.boolean_attribute import BooleanAttribute
from sampler.policies.bytes_limiting import BytesLimiting
from sampler.policies.composite import Composite, Share, shares
from sampler.policies.config import PolicyConfig, SharedPolicyConfig
from sampler.policies.drop import Drop
from sampler.policies.latency import Latency
from sampler.policies.not_ import Not
from sampler.policies.numeric_attribute import NumericAttribute
from sampler.policies.ottl_condition import OttlCondition
from sampler.policies.probabilistic import Probabilistic
from sampler.policies.rate_limiting import RateLimiting
from sampler.policies.span_count import SpanCount
from sampler.policies.status_code import StatusCode
from sampler.policies.string_attribute import StringAttribute
from sampler.policies.trace_flags import TraceFlags
from sampler.policies.trace_state import TraceState
from sampler.policies.view import start_deciding, stop_deciding
from sampler.trace import Decision, Trace

__all__ = ["Evaluator", "NamedPolicy", "PolicyConfig", "build_policy", "build_policies", "decide"]

Clock = Callable[[], float]
_READS_EVERY_SPAN = attrgetter("reads_every_span")


def _and(config: Any, clock: Clock) -> Evaluator:
    return And([build_policy(sub, clock) for sub in config.and_sub_policy])


def _drop(config: Any, clock: Clock) -> Evaluator:
    return Drop([build_policy(sub, clock) for sub in config.drop_sub_policy])


def _composite(config: Any, clock: Clock) -> Evaluator:
    allocated = shares(config)
    subpolicies = [Share(sub.name, build_policy(sub, clock), allocated[sub.name])
                   for sub in config.composite_sub_policy]
    return Composite(config.max_total_spans_per_second, subpolicies, clock)


# type name -> builder from the type's block (None for always_sample and trace_flags) and the clock
BUILDERS: dict[str, Callable[[Any, Clock], Evaluator]] = {
    "always_sample": lambda block, clock: AlwaysSample(),
    "latency": lambda block, clock: Latency(block),
    "numeric_attribute": lambda block, clock: NumericAttribute(block),
    "probabilistic": lambda block, clock: Probabilistic(block),
    "status_code": lambda block, clock: StatusCode(block),
    "string_attribute": lambda block, clock: StringAttribute(block),
    "boolean_attribute": lambda block, clock: BooleanAttribute(block),
    "span_count": lambda block, clock: SpanCount(block),
    "trace_state": lambda block, clock: TraceState(block),
    "trace_flags": lambda block, clock: TraceFlags(),
    "ottl_condition": lambda block, clock: OttlCondition(block),
    "rate_limiting": RateLimiting,
    "bytes_limiting": BytesLimiting,
    "and": _and,
    "not": lambda block, clock: Not(build_policy(block.not_sub_policy, clock)),
    "drop": _drop,
    "composite": _composite,
}


def build_policy(config: SharedPolicyConfig, clock: Clock) -> Evaluator:
    """The evaluator for one validated policy config (top-level or sub-policy)."""
    return BUILDERS[config.type](config.block(), clock)


def build_policies(configs: Sequence[PolicyConfig], clock: Clock) -> list[NamedPolicy]:
    """Evaluators for the `policies:` list, drop policies first (as otelcol orders them)."""
    built = [NamedPolicy(config.name, config.type, build_policy(config, clock)) for config in configs]
    return [p for p in built if p.type == "drop"] + [p for p in built if p.type != "drop"]


def decide(policies: Sequence[NamedPolicy], trace: Trace,
           sample_on_first_match: bool = False) -> tuple[Decision, dict[str, Decision]]:
    """The final decision (SAMPLED, NOT_SAMPLED or DROPPED) and each evaluated policy's own decision
    (ERROR for one that failed: it takes no part in the final decision).

    Policies run in the order given (build_policies puts drop policies first); policies after
    an early stop are not evaluated and are absent from the returned dict.
    """
    decisions: dict[str, Decision] = {}
    sampled = not_sampled = inverted_sampled = inverted_not_sampled = False
    if not trace.parsed and any(map(_READS_EVERY_SPAN, policies)):
        trace.batches  # noqa: B018 (parsed now, so no policy before it searches the bytes in vain)
    token = start_deciding(trace)
    try:
        for named in policies:
            decision = named.policy.evaluate(trace)
            decisions[named.name] = decision
            if decision is Decision.ERROR:
                continue  # as otelcol: an error is no decision of the policy's (counted by the caller)
            if decision is Decision.SAMPLED:
                sampled = True
                if sample_on_first_match:
                    break
            elif decision is Decision.NOT_SAMPLED:
                not_sampled = True
            elif decision is Decision.DROPPED:
                return Decision.DROPPED, decisions
            elif decision is Decision.INVERTED_NOT_SAMPLED:
                inverted_not_sampled = True
            elif decision is Decision.INVERTED_SAMPLED:
                inverted_sampled = True
    finally:
        stop_deciding(token)
    if not inverted_not_sampled and (sampled or (inverted_sampled and not not_sampled)):
        return Decision.SAMPLED, decisions
    return Decision.NOT_SAMPLED, decisions
