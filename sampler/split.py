"""Cut a traces request into one request per trace id, resource and scope kept with each span."""

from __future__ import annotations

from collections.abc import Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel.shape import TRACES


def split_by_trace(request: ExportTraceServiceRequest) -> Iterator[tuple[bytes, ExportTraceServiceRequest, int, bool]]:
    """(trace id, request holding only its spans, span count, whether a root span is among them).
    A request of one trace is not copied."""
    by_trace = TRACES.runs_by_key(request, lambda span: span.trace_id)
    for trace_id, runs in by_trace.items():
        count = sum(len(spans) for _, _, spans in runs)
        root = any(not span.parent_span_id for _, _, spans in runs for span in spans)
        yield trace_id, request if len(by_trace) == 1 else TRACES.assemble(request, runs), count, root
