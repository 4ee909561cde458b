"""The unit a tail-sampling policy judges: every span of one trace received so far.

Spans are kept as otelcol keeps them: in `ResourceSpans` batches (resource and scope intact),
each holding only spans of this trace, so a kept trace is forwarded exactly as it arrived.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from otel.shape import TRACES


class Decision(enum.Enum):
    """A policy's verdict on a trace (otelcol's sampling.Decision)."""

    PENDING = "pending"
    SAMPLED = "sampled"
    NOT_SAMPLED = "not_sampled"
    INVERTED_SAMPLED = "inverted_sampled"
    INVERTED_NOT_SAMPLED = "inverted_not_sampled"
    DROPPED = "dropped"  # the drop policy: vetoes every other policy
    ERROR = "error"


@dataclass
class Trace:
    trace_id: bytes
    batches: list[ResourceSpans] = field(default_factory=list)
    span_count: int = 0
    size_bytes: int = 0  # serialized size of the spans received, for bytes_limiting
    first_seen: float = 0.0  # clock time of the first span
    root_seen: bool = False
    decision: Decision = Decision.PENDING
    # the serialized requests the spans came in, when the caller has them: a policy may rule a
    # trace out by a byte search before it walks the spans
    raw: list[bytes] = field(default_factory=list)

    def spans(self) -> Iterator[tuple[Resource, InstrumentationScope, Span]]:
        """(resource, scope, span) for every span, in arrival order."""
        return TRACES.walk_groups(self.batches)
