"""`trace_flags`: sample a trace with a span whose W3C trace flags have the sampled bit set."""

from __future__ import annotations

from sampler.policies.view import spans_of
from sampler.trace import Decision, Trace

SAMPLED_FLAG = 0x01  # the low byte of Span.flags holds the W3C trace flags


class TraceFlags:
    def evaluate(self, trace: Trace) -> Decision:
        for span in spans_of(trace):
            if span.flags & SAMPLED_FLAG:
                return Decision.SAMPLED
        return Decision.NOT_SAMPLED
