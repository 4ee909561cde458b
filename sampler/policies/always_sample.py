"""`always_sample`: sample every trace."""

from __future__ import annotations

from sampler.trace import Decision, Trace


class AlwaysSample:
    def evaluate(self, trace: Trace) -> Decision:
        return Decision.SAMPLED
