"""Cut a traces request into one request per trace id, resource and scope kept with each span."""

from __future__ import annotations

from typing import Any, Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.signals import Payload


def split_by_trace(payload: Payload) -> Iterator[tuple[bytes, Any, int, bool]]:
    """(trace id, request holding only its spans, span count, whether a root span is among them)."""
    request = payload.view()
    # one pass: spans of each trace per scope, in order
    groups: dict[bytes, list[tuple[int, int, list]]] = {}
    for rs_index, rs in enumerate(request.resource_spans):
        for ss_index, ss in enumerate(rs.scope_spans):
            current_id = None
            current: list = []
            for span in ss.spans:
                trace_id = span.trace_id
                if trace_id != current_id:  # SDKs write a trace's spans together: few switches
                    current_id = trace_id
                    places = groups.setdefault(trace_id, [])
                    if places and places[-1][0] == rs_index and places[-1][1] == ss_index:
                        current = places[-1][2]
                    else:
                        current = []
                        places.append((rs_index, ss_index, current))
                current.append(span)
    if len(groups) == 1:  # one trace: the request as it is, no copy
        (trace_id, places), = groups.items()
        root = any(not span.parent_span_id for _, _, spans in places for span in spans)
        yield trace_id, request, payload.items, root
        return
    resource_spans = request.resource_spans
    for trace_id, places in groups.items():
        part = ExportTraceServiceRequest()
        count, root, last_rs, target = 0, False, -1, None
        for rs_index, ss_index, spans in places:
            source = resource_spans[rs_index]
            if rs_index != last_rs:
                target = part.resource_spans.add()
                target.resource.CopyFrom(source.resource)
                target.schema_url = source.schema_url
                last_rs = rs_index
            scope = source.scope_spans[ss_index]
            scope_spans = target.scope_spans.add()
            scope_spans.scope.CopyFrom(scope.scope)
            scope_spans.schema_url = scope.schema_url
            scope_spans.spans.extend(spans)
            count += len(spans)
            root = root or any(not span.parent_span_id for span in spans)
        yield trace_id, part, count, root
