"""`span_count`: sample a trace whose number of spans is in [min_spans, max_spans] (max_spans 0: no bound;
below 0 either bound holds as written, as in otelcol).

The count is every span received for the trace so far (Trace.span_count), as otelcol counts.
"""

from __future__ import annotations

from sampler.policies.base import never_reads
from sampler.policies.config import SpanCountConfig
from sampler.trace import Decision, Trace


class SpanCount:
    def __init__(self, config: SpanCountConfig):
        self.min_spans = config.min_spans
        self.max_spans = config.max_spans

    reads_bytes = staticmethod(never_reads)  # it judges the trace by its span count

    def evaluate(self, trace: Trace) -> Decision:
        count = trace.span_count
        if count >= self.min_spans and (not self.max_spans or count <= self.max_spans):
            return Decision.SAMPLED
        return Decision.NOT_SAMPLED
