"""What every policy offers: `evaluate(trace) -> Decision`, and the name it is configured under."""

from __future__ import annotations

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
    # the evaluator's optional class attribute (latency), read once here rather than per trace
    reads_every_span: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads_every_span", bool(getattr(self.policy, "reads_every_span", False)))
