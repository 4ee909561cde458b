"""Tail-sampling policies, as otelcol's `tail_sampling` processor defines them.

One module per policy type (the YAML type name; `and_` and `not_` because `and` and `not` are
Python keywords), each a class with `evaluate(trace) -> Decision`. `build_policies` turns the
validated `policies:` list into evaluators; `decide` runs them on a trace and combines their
decisions into the final one, as otelcol's makeDecision does:

  1. Drop policies run first, whatever their place in the list, and the first Dropped stops
     the evaluation; with `sample_on_first_match` the first Sampled stops it too.
  2. Any Dropped: the trace is dropped.
  3. Else any Sampled: sampled.
  4. Else not sampled.
(otelcol 0.165 still combines the inverted decisions of earlier releases, but none of its
policies gives one: invert_match answers Sampled or NotSampled, sampler.policies.attributes.)
A policy that fails (Decision.ERROR: an ottl_condition with error_mode propagate) counts as
no decision at all and is absent from the returned decisions.

Time-based policies (rate_limiting, bytes_limiting, composite) read the clock given to
`build_policies`, so tests control time.

A trace may come unparsed (Trace.raw and a parse function): policies that can answer from its
bytes or its trace-level facts do so. A policy with a `needs_spans(trace)` method (latency,
when the trace's `times` cannot answer) will parse it anyway, so `decide` parses such a trace
first, and no policy spends a byte search on it. The method is optional.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import reduce
from operator import or_
from typing import Any

from sampler.policies.always_sample import AlwaysSample
from sampler.policies.and_ import And
from sampler.policies.attributes import AttributePolicy
from sampler.policies.base import Evaluator, NamedPolicy, never_reads, reads_bytes
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
from sampler.policies.view import SparingFinder, start_deciding, stop_deciding
from sampler.split import Confirm, Finder
from sampler.trace import Decision, Trace

__all__ = ["Evaluator", "NamedPolicy", "PolicyConfig", "build_policy", "build_policies", "byte_hints", "decide",
           "decide_many", "never_reads", "reads_bytes", "reads_span_times"]

Clock = Callable[[], float]


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


def _evaluators(policies: Sequence[NamedPolicy]) -> Iterator[Evaluator]:
    """Every evaluator, top-level policies and the sub-policies at any depth."""
    stack: list[Evaluator] = [named.policy for named in reversed(policies)]
    while stack:
        policy = stack.pop()
        yield policy
        if isinstance(policy, (And, Drop)):
            stack.extend(reversed(policy.subpolicies))
        elif isinstance(policy, Not):
            stack.append(policy.subpolicy)
        elif isinstance(policy, Composite):
            stack.extend(share.policy for share in reversed(policy.subpolicies))


def reads_span_times(policies: Sequence[NamedPolicy]) -> bool:
    """Whether a policy, at any depth, judges a trace by its spans' earliest start and latest end
    (Trace.times): then the caller should read them as spans arrive."""
    return any(isinstance(policy, Latency) and policy.reads_times for policy in _evaluators(policies))


def byte_hints(policies: Sequence[NamedPolicy]) -> tuple[list[tuple[int, Finder]], dict[int, tuple[Confirm, int]]]:
    """Give each policy, at any depth, that can say where in a request's bytes a match may be
    (status_code, the attribute policies) a bit of Trace.hints, and a second one to each that
    can tell a span's match on its own (HintSearcher.confirms); (bit, its finder) for each, and
    for each of the second kind its confirm and second bit by the first, for the split to read
    as spans arrive (sampler.split.Facts). A policy reads its bits only when the trace's hints
    are known."""
    finders: list[tuple[int, Finder]] = []
    confirms: dict[int, tuple[Confirm, int]] = {}
    bits = 0
    for policy in _evaluators(policies):
        if isinstance(policy, (StatusCode, AttributePolicy)):
            policy.hint_bit = 1 << bits
            finders.append((policy.hint_bit, SparingFinder(policy.places)))
            bits += 1
            if policy.can_confirm:
                policy.sure_bit = 1 << bits
                confirms[policy.hint_bit] = (policy.confirms, policy.sure_bit)
                bits += 1
    return finders, confirms


# a trace's decisions so far as a mask of these bits; _FINALS maps a mask to the final decision
_SAMPLED, _NOT_SAMPLED, _DROPPED = 1, 2, 4
_BITS = {Decision.SAMPLED: _SAMPLED, Decision.NOT_SAMPLED: _NOT_SAMPLED, Decision.DROPPED: _DROPPED,
         Decision.ERROR: 0, Decision.PENDING: 0}  # an error is no decision of the policy's (the caller counts it)


def _final(mask: int) -> Decision:
    if mask & _DROPPED:
        return Decision.DROPPED
    return Decision.SAMPLED if mask & _SAMPLED else Decision.NOT_SAMPLED


_FINALS = tuple(_final(mask) for mask in range(8))


def decide_many(policies: Sequence[NamedPolicy], traces: Sequence[Trace],
                sample_on_first_match: bool = False) -> tuple[list[Decision], list[tuple[str, list[Decision]]]]:
    """The final decision of each trace (SAMPLED, NOT_SAMPLED or DROPPED), and per evaluated
    policy, its name and its decisions on the traces it evaluated, in order.

    Policy by policy over all the traces, not trace by trace: the same decisions, as each
    policy sees the same traces in the same order (a time-based policy spends its budget
    alike), and a trace leaves the round where `decide` would stop evaluating it: once
    dropped, or once sampled with `sample_on_first_match`. Callers pass tens of traces at a
    time: what policies parse of them stays alive until the call returns."""
    masks = [0] * len(traces)
    evaluated: list[tuple[str, list[Decision]]] = []
    needs = [named.needs_spans for named in policies if named.needs_spans is not None]
    for need in needs:  # parsed now, so no policy before the one that reads every span searches the bytes in vain
        for trace in filter(need, traces):  # filter in C: few traces need their spans
            trace.batches  # noqa: B018 (parsed once: a trace parsed already keeps its batches)
    stop = _DROPPED | (_SAMPLED if sample_on_first_match else 0)
    live: list[int] | None = None  # indices of the traces still evaluated; None: all of them
    live_traces = traces
    sharing = start_deciding(traces)
    try:
        for named in policies:
            if not live_traces:
                break
            results = named.evaluate_many(live_traces)
            evaluated.append((named.name, results))
            bits = list(map(_BITS.__getitem__, results))
            if live is None:
                masks = list(map(or_, masks, bits))
            else:
                for index, bit in zip(live, bits, strict=True):
                    masks[index] |= bit
            if reduce(or_, bits, 0) & stop:
                live = [index for index in (range(len(traces)) if live is None else live) if not masks[index] & stop]
                live_traces = [traces[index] for index in live]
    finally:
        stop_deciding(sharing)
    return list(map(_FINALS.__getitem__, masks)), evaluated


def decide(policies: Sequence[NamedPolicy], trace: Trace,
           sample_on_first_match: bool = False) -> tuple[Decision, dict[str, Decision]]:
    """The final decision (SAMPLED, NOT_SAMPLED or DROPPED) and each evaluated policy's own decision
    (ERROR for one that failed: it takes no part in the final decision).

    Policies run in the order given (build_policies puts drop policies first); policies after
    an early stop are not evaluated and are absent from the returned dict.
    """
    finals, evaluated = decide_many(policies, [trace], sample_on_first_match)
    return finals[0], {name: decisions[0] for name, decisions in evaluated}
