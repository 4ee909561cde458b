"""Finding an attribute on a trace's resources and spans, as otelcol's attribute policies do.

otelcol looks at each batch's resource first, then at its spans, and stops at the first match.
A key present twice counts with its first value. A value of another type reads as that type's
zero (pdata's Value.Str(), Int() and Bool()), which protobuf's field access gives as well.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sampler.trace import Decision, Trace

ValueMatch = Callable[[AnyValue], bool]


def any_attribute_match(trace: Trace, key: str, resource_match: ValueMatch, span_match: ValueMatch) -> bool:
    """Whether some resource (checked by `resource_match`) or span (`span_match`) has `key` matching."""
    for batch in trace.batches:
        for kv in batch.resource.attributes:
            if kv.key == key:
                if resource_match(kv.value):
                    return True
                break
        for scope_spans in batch.scope_spans:
            for span in scope_spans.spans:
                for kv in span.attributes:
                    if kv.key == key:
                        if span_match(kv.value):
                            return True
                        break
    return False


class AttributePolicy(ABC):
    """string_attribute, numeric_attribute and boolean_attribute: a match samples the trace.

    With invert_match the answer is otelcol's inverted decision: InvertNotSampled as soon as a
    resource or span matches, InvertSampled when none does (also when the key is missing).
    """

    def __init__(self, key: str, invert_match: bool):
        self.key = key
        self.invert_match = invert_match

    @abstractmethod
    def resource_match(self, value: AnyValue) -> bool:
        """Whether a resource's value of the key matches."""

    def span_match(self, value: AnyValue) -> bool:
        """Whether a span's value of the key matches; as for resources unless a policy says otherwise."""
        return self.resource_match(value)

    def evaluate(self, trace: Trace) -> Decision:
        matched = any_attribute_match(trace, self.key, self.resource_match, self.span_match)
        if self.invert_match:
            return Decision.INVERTED_NOT_SAMPLED if matched else Decision.INVERTED_SAMPLED
        return Decision.SAMPLED if matched else Decision.NOT_SAMPLED
