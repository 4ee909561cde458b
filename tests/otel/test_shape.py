"""otel.shape walks, counts and regroups every signal's request the way otelcol does."""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel.shape import METRICS, TRACES


def _traces(*layout: list[list[bytes]]) -> ExportTraceServiceRequest:
    """One resource per entry of `layout`, one scope per inner list, one span per trace id."""
    request = ExportTraceServiceRequest()
    for r, scopes in enumerate(layout):
        group = request.resource_spans.add(schema_url=f"r{r}")
        group.resource.attributes.add(key="service.name").value.string_value = f"svc{r}"
        for s, trace_ids in enumerate(scopes):
            scope = group.scope_spans.add(schema_url=f"s{s}")
            scope.scope.name = f"scope{r}.{s}"
            for i, trace_id in enumerate(trace_ids):
                scope.spans.add(trace_id=trace_id, span_id=bytes([r, s, i]) * 2 + b"xy", name=f"{r}.{s}.{i}")
    return request


def test_partition_keeps_each_span_under_its_own_resource_and_scope_in_order():
    request = _traces([[b"a", b"b", b"a"], [b"b"]], [[b"a"]])
    parts = TRACES.partition(request, lambda span: span.trace_id)
    assert list(parts) == [b"a", b"b"]
    a = [(resource.attributes[0].value.string_value, scope.name, span.name) for resource, scope, span in
         TRACES.walk(parts[b"a"])]
    assert a == [("svc0", "scope0.0", "0.0.0"), ("svc0", "scope0.0", "0.0.2"), ("svc1", "scope1.0", "1.0.0")]
    b = parts[b"b"]
    assert len(b.resource_spans) == 1 and [s.schema_url for s in b.resource_spans[0].scope_spans] == ["s0", "s1"]
    assert b.resource_spans[0].schema_url == "r0"
    assert sum(TRACES.count(part) for part in parts.values()) == TRACES.count(request) == 5


def test_partition_of_one_key_returns_the_request_without_copying_it():
    request = _traces([[b"a", b"a"]])
    assert TRACES.partition(request, lambda span: span.trace_id)[b"a"] is request
    assert TRACES.partition(ExportTraceServiceRequest(), lambda span: span.trace_id) == {}


def test_metrics_count_and_records_are_data_points_not_metrics():
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    scope.metrics.add(name="g").gauge.data_points.add().as_int = 1
    histogram = scope.metrics.add(name="h").histogram
    histogram.data_points.add(count=1)
    histogram.data_points.add(count=2)
    scope.metrics.add(name="empty")
    assert METRICS.count(request) == 3
    assert [type(point).__name__ for _, _, point in METRICS.records(request)] == [
        "NumberDataPoint", "HistogramDataPoint", "HistogramDataPoint"]
    assert [metric.name for _, _, metric in METRICS.walk(request)] == ["g", "h", "empty"]
