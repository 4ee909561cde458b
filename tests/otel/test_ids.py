"""otel.ids finds an id of the wrong length wherever pdata would, in every layout of ids it reads
in one pass and in the parts a large request is read in."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel import ids
from otel.ids import invalid_id

TRACE, SPAN = bytes(range(1, 17)), bytes(range(1, 9))


def _spans(count: int, scopes: int = 1) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    group = request.resource_spans.add()
    for _ in range(scopes):
        spans = group.scope_spans.add().spans
        for number in range(count):  # roots, children, spans without ids: every layout
            spans.add(name=f"s{number}", trace_id=TRACE if number % 4 else b"", span_id=SPAN if number % 3 else b"",
                      parent_span_id=SPAN if number % 2 else b"")
    return request


def _invalid(request: ExportTraceServiceRequest | ExportLogsServiceRequest, kind: str) -> str | None:
    count = sum(len(getattr(scope, "spans" if kind == "traces" else "log_records"))
                for group in getattr(request, "resource_spans" if kind == "traces" else "resource_logs")
                for scope in getattr(group, "scope_spans" if kind == "traces" else "scope_logs"))
    return invalid_id(kind, request, count, request.SerializeToString())


@pytest.mark.parametrize(("field", "value", "name"), [
    ("trace_id", TRACE + b"x", "TraceID"), ("trace_id", b"x", "TraceID"), ("span_id", SPAN[:7], "SpanID"),
    ("parent_span_id", TRACE, "SpanID"),
])
def test_a_span_id_of_another_length_is_found(field, value, name):
    request = _spans(40, scopes=2)
    assert _invalid(request, "traces") is None
    setattr(request.resource_spans[0].scope_spans[1].spans[17], field, value)
    assert _invalid(request, "traces") == f"unmarshal: invalid {name} length"


def test_a_link_is_read_id_by_id():
    request = _spans(10)
    span = request.resource_spans[0].scope_spans[0].spans[3]
    span.links.append(Span.Link(trace_id=TRACE, span_id=SPAN))
    assert _invalid(request, "traces") is None
    span.links.append(Span.Link(trace_id=TRACE, span_id=SPAN + SPAN))
    assert _invalid(request, "traces") == "unmarshal: invalid SpanID length"


def test_a_log_record_id_of_another_length_is_found():
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for number in range(30):
        records.add(trace_id=TRACE if number % 2 else b"", span_id=SPAN if number % 3 else b"").body.string_value = "x"
    assert _invalid(request, "logs") is None
    records[29].trace_id = SPAN
    assert _invalid(request, "logs") == "unmarshal: invalid TraceID length"


def test_a_large_request_is_read_in_parts_and_the_last_part_is_read_too(monkeypatch):
    monkeypatch.setattr(ids, "CHUNK", 16)
    request = _spans(100)
    assert _invalid(request, "traces") is None
    request.resource_spans[0].scope_spans[0].spans[97].span_id = b"abc"
    assert _invalid(request, "traces") == "unmarshal: invalid SpanID length"
