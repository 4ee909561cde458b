"""`ottl_condition`: sample a trace when an OTTL condition matches one of its spans or span events.

As otelcol: spans in arrival order; for each span the `span` conditions first, then the
`spanevent` conditions on each of its events; the first match samples the trace. Within a list
any condition matching is a match (otel.ottl.ConditionSequence). With `error_mode:
propagate` a condition that fails ends the evaluation with an error decision, which `decide`
skips and `and`, `drop`, `not` and `composite` pass up, as otelcol does with the error.

Conditions are compiled once, when the policy is built; evaluating one reads only the fields it
names, through one Context reused for every span of the trace. When every condition needs one
of some attribute keys (otel.ottl.needles), a batch whose serialized bytes hold none of them
is skipped without looking at its spans, and when none of the requests the trace came in holds
one, no batch is serialized at all: the attribute policies' shortcut (a lone batch, when those
requests may match, is walked without serializing it). Such a batch cannot
match, nor make a condition fail, so the decision is the same.
"""

from __future__ import annotations

from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel.ottl import ConditionSequence, Context, OttlEvalError
from otel.shape import TRACES
from sampler.policies.ottl_config import OttlConditionConfig
from sampler.policies.view import serialized_batches
from sampler.trace import Decision, Trace

_EMPTY = (ResourceSpans(), ScopeSpans(), Span())


class OttlCondition:
    def __init__(self, config: OttlConditionConfig):
        mode = config.error_mode
        self.spans = ConditionSequence(config.span, "span", mode) if config.span else None
        self.events = ConditionSequence(config.spanevent, "spanevent", mode) if config.spanevent else None
        sequences = [sequence for sequence in (self.spans, self.events) if sequence is not None]
        needed = [sequence.keys for sequence in sequences]
        # byte strings of which a batch must hold one to match; None: any batch may match
        self.needles: tuple[bytes, ...] | None = None if None in needed else tuple(
            sorted(key.encode() for keys in needed if keys is not None for key in keys))

    def evaluate(self, trace: Trace) -> Decision:
        try:
            return Decision.SAMPLED if self._matches(trace) else Decision.NOT_SAMPLED
        except OttlEvalError:
            return Decision.ERROR

    def _batches(self, trace: Trace) -> list[ResourceSpans]:
        """The batches that may hold a match."""
        needles = self.needles
        if needles is None:
            return trace.batches

        def may_match(data: bytes) -> bool:
            return any(needle in data for needle in needles)

        if trace.raw:
            if not any(may_match(data) for data in trace.raw):
                return []
            if len(trace.batches) == 1:
                return trace.batches  # the requests' bytes said it may match: serializing it again tells nothing new
        return [batch for batch, data in zip(trace.batches, serialized_batches(trace), strict=True) if may_match(data)]

    def _matches(self, trace: Trace) -> bool:
        spans, events = self.spans, self.events
        ctx = Context(*_EMPTY)
        for group in self._batches(trace):
            ctx.group = group
            for scope in TRACES.scopes_of(group):
                ctx.scope = scope
                for span in TRACES.items_of(scope):
                    ctx.span = span
                    if spans is not None and spans.matches(ctx):
                        return True
                    if events is not None:
                        for event in span.events:
                            ctx.event = event
                            if events.matches(ctx):
                                return True
        return False
