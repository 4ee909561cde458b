"""Cut a traces request into one request per trace id, resource and scope kept with each span."""

from __future__ import annotations

from collections.abc import Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel.shape import TRACES


def split_by_trace(request: ExportTraceServiceRequest) -> Iterator[tuple[bytes, ExportTraceServiceRequest, int, bool]]:
    """(trace id, request holding only its spans, span count, whether a root span is among them).
    A request of one trace is not copied."""
    for trace_id, part in TRACES.partition(request, lambda span: span.trace_id).items():
        root = any(not span.parent_span_id for _, _, span in TRACES.walk(part))
        yield trace_id, part, TRACES.count(part), root
