"""`always_sample`: sample every trace."""

from __future__ import annotations

from sampler.trace import Decision, Trace


class AlwaysSample:
    def reads_bytes(self, trace: Trace) -> bool:
        return False  # it judges the trace by nothing

    def evaluate(self, trace: Trace) -> Decision:
        return Decision.SAMPLED
