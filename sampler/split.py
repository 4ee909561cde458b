"""Cut a traces request into one request per trace id, resource and scope kept with each span."""

from __future__ import annotations

from typing import Any, Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.signals import Payload


def split_by_trace(payload: Payload) -> Iterator[tuple[bytes, Any, int, bool]]:
    """(trace id, request holding only its spans, span count, whether a root span is among them)."""
    request = payload.view()
    trace_ids = {span.trace_id for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans}
    if len(trace_ids) == 1:  # the common case for SDK batches of one trace: no copy
        trace_id = trace_ids.pop()
        root = any(not span.parent_span_id for rs in request.resource_spans for ss in rs.scope_spans
                   for span in ss.spans)
        yield trace_id, request, payload.items, root
        return
    parts: dict[bytes, list] = {}  # trace id -> [request, resource index, ResourceSpans, spans, root]
    for rs_index, rs in enumerate(request.resource_spans):
        for ss in rs.scope_spans:
            by_trace: dict[bytes, list] = {}
            for span in ss.spans:
                by_trace.setdefault(span.trace_id, []).append(span)
            for trace_id, spans in by_trace.items():
                part = parts.get(trace_id)
                if part is None:
                    part = parts[trace_id] = [ExportTraceServiceRequest(), -1, None, 0, False]
                if part[1] != rs_index:  # first spans of this trace under this resource
                    resource_spans = part[0].resource_spans.add()
                    resource_spans.resource.CopyFrom(rs.resource)
                    resource_spans.schema_url = rs.schema_url
                    part[1], part[2] = rs_index, resource_spans
                scope_spans = part[2].scope_spans.add()
                scope_spans.scope.CopyFrom(ss.scope)
                scope_spans.schema_url = ss.schema_url
                scope_spans.spans.extend(spans)
                part[3] += len(spans)
                part[4] = part[4] or any(not span.parent_span_id for span in spans)
    for trace_id, (part_request, _, _, count, root) in parts.items():
        yield trace_id, part_request, count, root
