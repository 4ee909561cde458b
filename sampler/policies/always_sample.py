"""`always_sample`: sample every trace."""

from __future__ import annotations

from sampler.policies.base import never_reads
from sampler.trace import Decision, Trace


class AlwaysSample:
    reads_bytes = staticmethod(never_reads)  # it judges the trace by nothing

    def evaluate(self, trace: Trace) -> Decision:
        return Decision.SAMPLED
