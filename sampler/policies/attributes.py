"""Finding an attribute on a trace's resources and spans, as otelcol's attribute policies do.

otelcol looks at each batch's resource first, then at its spans, and stops at the first match.
A key present twice counts with its first value. A value of another type reads as that type's
zero (pdata's Value.Str(), Int() and Bool()), which protobuf's field access gives as well.

A batch whose serialized bytes do not contain the key (or, for exact string values, any of
the values) cannot match and is skipped without looking at its spans: protobuf writes every
string as its UTF-8 bytes, so an attribute with that key and value would show in them. The
same holds for the requests a trace arrived in (Trace.raw): when none can match, no batch is
serialized at all.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel.shape import TRACES
from sampler.policies.base import HintSearcher, evaluate_hinted
from sampler.policies.view import find_all, serialized_batches
from sampler.trace import Decision, Trace

ValueMatch = Callable[[AnyValue], bool]


def _every_start(needle: bytes) -> re.Pattern[bytes]:
    """A pattern found at every place `needle` starts. A search resumes after each match, so of
    two overlapping places it finds the first alone, and a needle that begins as it ends (a
    border) may overlap itself: one place ending a span, running over the next span's key and
    length, would hide a true match in that span. Such a needle is found as a lookahead (no
    literal prefix to search in C: slower, and rare)."""
    escaped = re.escape(needle)
    if any(needle[:size] == needle[-size:] for size in range(1, len(needle))):
        return re.compile(b"(?=" + escaped + b")")
    return re.compile(escaped)


class AttributePolicy(HintSearcher, ABC):
    """string_attribute, numeric_attribute and boolean_attribute: a match samples the trace.

    With invert_match the answer is turned round, as otelcol 0.165 does: NotSampled as soon as a
    resource or span matches, Sampled when none does (also when the key is missing). These are
    plain decisions: a match vetoes no other policy's Sampled, and `not` turns them round again.
    `needles`: byte strings of which a batch must contain one to hold a match (none: any batch).
    """

    def __init__(self, key: str, invert_match: bool, needles: Sequence[bytes] = ()):
        self.key = key
        self.invert_match = invert_match
        self.key_bytes = key.encode()
        self.needles = tuple(needles)
        self._place_patterns = [_every_start(needle) for needle in self.needles or (self.key_bytes,)]

    @abstractmethod
    def resource_match(self, value: AnyValue) -> bool:
        """Whether a resource's value of the key matches."""

    def span_match(self, value: AnyValue) -> bool:
        """Whether a span's value of the key matches; as for resources unless a policy says otherwise."""
        return self.resource_match(value)

    def places(self, raw: bytes) -> list[int] | None:
        """Where in a request's bytes a match may be (Facts.finders): a value's bytes, or without
        values to look for, the key's."""
        found: list[int] = []
        for pattern in self._place_patterns:
            if not find_all(pattern, raw, found):
                return None
        return found

    can_confirm = True

    def confirms(self, span: Span) -> bool:
        """Whether the span has the key with a matching value (its first value, as `matches` reads)."""
        key = self.key
        for kv in span.attributes:
            if kv.key == key:
                return self.span_match(kv.value)
        return False

    def refuses(self, trace: Trace) -> bool:
        """Whether it is certain to answer NotSampled without reading the trace's spans."""
        return not self.invert_match and self.ruled_out(trace)

    def matches(self, trace: Trace) -> bool:
        """Whether some resource or span of the trace has the key with a matching value."""
        if self.ruled_out(trace):
            return False  # no resource or span of it holds the bytes a match needs
        if self.matched(trace):
            return True  # a span of it matched as it arrived
        key = self.key
        if trace.raw and not any(map(self._may_match, trace.raw)):
            return False  # no batch can hold a match: no need to serialize them one by one
        for batch, data in zip(trace.batches, serialized_batches(trace), strict=True):
            if not self._may_match(data):
                continue
            for kv in batch.resource.attributes:
                if kv.key == key:
                    if self.resource_match(kv.value):
                        return True
                    break
            for span in TRACES.items_in((batch,)):
                for kv in span.attributes:
                    if kv.key == key:
                        if self.span_match(kv.value):
                            return True
                        break
        return False

    def _may_match(self, data: bytes) -> bool:
        if self.key_bytes not in data:
            return False
        for needle in self.needles:  # a loop, not any() over a generator: this runs per trace
            if needle in data:
                return True
        return not self.needles

    def evaluate_many(self, traces: Sequence[Trace]) -> list[Decision]:
        unmatched = Decision.SAMPLED if self.invert_match else Decision.NOT_SAMPLED
        return evaluate_hinted(self.evaluate, self.hint_bit, unmatched, traces)

    def evaluate(self, trace: Trace) -> Decision:
        return Decision.SAMPLED if self.matches(trace) is not self.invert_match else Decision.NOT_SAMPLED
