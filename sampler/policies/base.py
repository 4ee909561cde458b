"""What every policy offers: `evaluate(trace) -> Decision`, and the name it is configured under."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sampler.trace import Decision, Trace


class Evaluator(Protocol):
    def evaluate(self, trace: Trace) -> Decision:
        """The policy's verdict on the trace; time-based policies also spend their budget on it."""


@dataclass(frozen=True)
class NamedPolicy:
    """A top-level policy: its `name` from the config, and the evaluator built from it."""

    name: str
    type: str
    policy: Evaluator
    # the evaluator's optional `needs_spans(trace)` (latency): whether it will read every span of
    # a trace; looked up once here rather than per trace
    needs_spans: Callable[[Trace], bool] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs_spans", getattr(self.policy, "needs_spans", None))
