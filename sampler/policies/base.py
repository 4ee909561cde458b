"""What every policy offers: `evaluate(trace) -> Decision`, and the name it is configured under."""

from __future__ import annotations

from dataclasses import dataclass
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
