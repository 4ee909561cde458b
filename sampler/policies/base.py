"""What every policy offers: `evaluate(trace) -> Decision`, and the name it is configured under."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.trace import Decision, Trace


class Evaluator(Protocol):
    def evaluate(self, trace: Trace) -> Decision:
        """The policy's verdict on the trace; time-based policies also spend their budget on it."""


def reads_bytes(policy: Evaluator, trace: Trace) -> bool:
    """Whether evaluating `policy` on `trace` may read the trace's bytes or spans, as its optional
    `reads_bytes(trace)` says; a policy without one may. A trace that no policy reads need not be
    read back from the buffer to be decided."""
    method = getattr(policy, "reads_bytes", None)
    return True if method is None else bool(method(trace))


def never_reads(trace: Trace) -> bool:
    """The `reads_bytes` of a policy that judges every trace without its bytes or spans (by its id,
    its span count, the clock): a caller that finds it need not ask it about each trace."""
    return False


def evaluate_many(policy: Evaluator, traces: Sequence[Trace]) -> list[Decision]:
    """`policy.evaluate` of each trace in turn, by its optional `evaluate_many` where it has one."""
    many = getattr(policy, "evaluate_many", None)
    return many(traces) if many is not None else list(map(policy.evaluate, traces))


def hinted(traces: Sequence[Trace], hint_bit: int) -> list[bool]:
    """Per trace, whether its hints leave a policy with `hint_bit` a place to match: the bit set,
    or hints unknown. One comprehension: half the cost of maps over the hints, whose calls
    through method wrappers (hint_bit.__and__, bool) cost more than a loop's step."""
    return [(hints := trace.hints) is None or hints & hint_bit != 0 for trace in traces]


def evaluate_hinted(evaluate: Callable[[Trace], Decision], hint_bit: int, ruled_out: Decision,
                    traces: Sequence[Trace]) -> list[Decision]:
    """`evaluate` of each trace in turn, but a trace whose hints clear `hint_bit` (no place in its
    bytes where the policy may match) gets `ruled_out` without a call: most traces."""
    if not hint_bit:
        return list(map(evaluate, traces))
    return [evaluate(trace) if (hints := trace.hints) is None or hints & hint_bit else ruled_out for trace in traces]


def reads_hinted(hint_bit: int, traces: Sequence[Trace]) -> list[bool]:
    """`reads_bytes` of each trace for a policy that reads a trace unless its hints rule it out."""
    return hinted(traces, hint_bit) if hint_bit else [True] * len(traces)


class HintSearcher:
    """A policy that can say where in a request's bytes a match may begin (status_code, the
    attribute policies): with its bit of Trace.hints clear, no span of a trace can match, and
    the trace need not be read back for it. One that can also tell of a single span whether it
    matches (`confirms`) gets a second bit, set on the traces with a span that does
    (sampler.split.Facts.confirms): those match without being read back either."""

    hint_bit = 0  # its bit in Trace.hints, once sampler.policies.byte_hints gave it one
    sure_bit = 0  # its bit for a match found for certain, given with the first when can_confirm
    can_confirm = False

    def confirms(self, span: Span) -> bool:
        """Whether the span matches, which makes the trace match (asked only when can_confirm)."""
        raise NotImplementedError

    def ruled_out(self, trace: Trace) -> bool:
        hints = trace.hints
        return bool(self.hint_bit) and hints is not None and not hints & self.hint_bit

    def matched(self, trace: Trace) -> bool:
        """Whether a span of the trace matches for certain (its second bit)."""
        hints = trace.hints
        return bool(self.sure_bit) and hints is not None and bool(hints & self.sure_bit)

    def reads_bytes(self, trace: Trace) -> bool:
        """Neither ruled out nor matched, inline: the stage asks it of every trace it decides."""
        hints = trace.hints
        return not self.hint_bit or hints is None or bool(hints & self.hint_bit) and not hints & self.sure_bit

    def reads_many(self, traces: Sequence[Trace]) -> list[bool]:
        if not self.sure_bit or not self.hint_bit:
            return reads_hinted(self.hint_bit, traces)
        may, sure = self.hint_bit, self.sure_bit
        return [(hints := trace.hints) is None or bool(hints & may) and not hints & sure for trace in traces]


def refuses(policy: Evaluator, trace: Trace) -> bool:
    """Whether `policy` is certain to answer NotSampled on `trace` without reading its spans, as its
    optional `refuses(trace)` says (status_code, attribute policies whose bytes rule it out)."""
    method = getattr(policy, "refuses", None)
    return method is not None and bool(method(trace))


@dataclass(frozen=True)
class NamedPolicy:
    """A top-level policy: its `name` from the config, and the evaluator built from it."""

    name: str
    type: str
    policy: Evaluator
    # the evaluator's optional `needs_spans(trace)` (latency): whether it will read every span of
    # a trace; looked up once here rather than per trace
    needs_spans: Callable[[Trace], bool] | None = field(init=False, default=None)
    # `evaluate` of each trace in turn: the evaluator's optional `evaluate_many(traces)` where it
    # judges many traces at once for less (probabilistic), else a call per trace
    evaluate_many: Callable[[Sequence[Trace]], list[Decision]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs_spans", getattr(self.policy, "needs_spans", None))
        many = getattr(self.policy, "evaluate_many", None)
        object.__setattr__(self, "evaluate_many", many or functools.partial(_each, self.policy.evaluate))


def _each(evaluate: Callable[[Trace], Decision], traces: Sequence[Trace]) -> list[Decision]:
    return list(map(evaluate, traces))
