"""OTTL conditions on log records, metrics, data points and resources, as pkg/ottl's ctxlog,
ctxmetric and ctxdatapoint read them: each field, nil where the item's kind lacks it, the enum
symbols each context knows, and the filter processor's datapoint converters."""

from __future__ import annotations

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, ResourceMetrics

from otel.ottl import Context, OttlEvalError, OttlSyntaxError, compile_condition
from tests.otel.ottl.test_evaluate import _set


@pytest.fixture
def log_ctx() -> Context:
    group = ResourceLogs()
    _set(group.resource.attributes, **{"service.name": "checkout"})
    scope = group.scope_logs.add()
    scope.scope.name, scope.scope.version = "io.lib", "1.2"
    _set(scope.scope.attributes, tier="gold")
    record = scope.log_records.add(severity_number=17, severity_text="ERROR", time_unix_nano=5,
                                   observed_time_unix_nano=6, trace_id=bytes(range(16)), span_id=b"\x01" * 8,
                                   flags=1, dropped_attributes_count=2, event_name="login")
    record.body.string_value = "disk full"
    _set(record.attributes, user="ann", code=7)
    return Context(group, scope, record=record)


@pytest.mark.parametrize("text", [
    'body == "disk full"', 'log.body.string == "disk full"', "severity_number == SEVERITY_NUMBER_ERROR",
    "severity_number >= SEVERITY_NUMBER_WARN", 'severity_text == "ERROR"', 'attributes["user"] == "ann"',
    'log.attributes["code"] == 7', "time_unix_nano == 5", "observed_time_unix_nano == 6",
    'trace_id.string == "000102030405060708090a0b0c0d0e0f"', 'span_id.string == "0101010101010101"',
    "flags == 1", "dropped_attributes_count == 2", 'event_name == "login"',
    'resource.attributes["service.name"] == "checkout"', 'instrumentation_scope.name == "io.lib"',
    'instrumentation_scope.version == "1.2"', 'instrumentation_scope.attributes["tier"] == "gold"',
    'scope.name == "io.lib"', 'IsMatch(body, "^disk")', 'Len(body) == 9',
])
def test_log_record_paths_read_their_field(log_ctx: Context, text: str) -> None:
    assert compile_condition(text, "log")(log_ctx) is True


def test_log_body_map_is_indexed_and_a_string_body_is_an_error(log_ctx: Context) -> None:
    with pytest.raises(OttlEvalError):
        compile_condition('body["k"] == "v"', "log")(log_ctx)
    _set(log_ctx.record.body.kvlist_value.values, k="v")
    assert compile_condition('body["k"] == "v"', "log")(log_ctx) is True
    assert compile_condition('body.string == "{\\"k\\":\\"v\\"}"', "log")(log_ctx) is True


@pytest.mark.parametrize(("text", "context", "message"), [
    ("severity_number == SPAN_KIND_SERVER", "log", "enum SPAN_KIND_SERVER is not known in a log condition"),
    ("kind == SEVERITY_NUMBER_ERROR", "span", "enum SEVERITY_NUMBER_ERROR"),
    ('name == "x"', "log", "path name is not supported in a log condition"),
    ("IsRootSpan()", "log", "function IsRootSpan is not supported in a log condition"),
    ('HasAttrOnDatapoint("k", "v")', "datapoint", "function HasAttrOnDatapoint is not supported"),
    ('HasAttrKeyOnDatapoint(name)', "metric", "argument 1 must be a string literal"),
    ('attributes["k"] == 1', "metric", r'path attributes\["k"\] is not supported in a metric condition'),
])
def test_what_a_context_does_not_know_is_refused_when_compiled(text: str, context: str, message: str) -> None:
    with pytest.raises(OttlSyntaxError, match=message):
        compile_condition(text, context)  # type: ignore[arg-type]


def _metrics() -> tuple[ResourceMetrics, object]:
    group = ResourceMetrics()
    _set(group.resource.attributes, host="a")
    scope = group.scope_metrics.add()
    scope.scope.name = "meter"
    return group, scope


def test_metric_paths_and_types() -> None:
    group, scope = _metrics()
    total = scope.metrics.add(name="requests", description="count", unit="1")  # type: ignore[attr-defined]
    total.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    total.sum.is_monotonic = True
    _set(total.sum.data_points.add(as_int=4).attributes, route="/a")
    gauge = scope.metrics.add(name="temp")  # type: ignore[attr-defined]
    gauge.gauge.data_points.add(as_double=1.5)
    empty = scope.metrics.add(name="nothing")  # type: ignore[attr-defined]
    sum_ctx, gauge_ctx, empty_ctx = (Context(group, scope, metric=metric)  # type: ignore[arg-type]
                                     for metric in (total, gauge, empty))
    for text in ('name == "requests"', 'description == "count"', 'unit == "1"', "type == METRIC_DATA_TYPE_SUM",
                 "aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE", "is_monotonic == true",
                 'metric.name == "requests"', 'resource.attributes["host"] == "a"', 'HasAttrKeyOnDatapoint("route")',
                 'HasAttrOnDatapoint("route", "/a")'):
        assert compile_condition(text, "metric")(sum_ctx) is True, text
    for text in ("type == METRIC_DATA_TYPE_GAUGE", "aggregation_temporality == nil", "is_monotonic == nil",
                 'not HasAttrKeyOnDatapoint("route")'):
        assert compile_condition(text, "metric")(gauge_ctx) is True, text
    assert compile_condition("type == METRIC_DATA_TYPE_NONE", "metric")(empty_ctx) is True
    with pytest.raises(OttlEvalError, match="unknown metric type"):
        compile_condition('HasAttrKeyOnDatapoint("route")', "metric")(empty_ctx)


def test_datapoint_paths_are_nil_where_the_kind_has_no_such_field() -> None:
    group, scope = _metrics()
    gauge = scope.metrics.add(name="temp", unit="C")  # type: ignore[attr-defined]
    number = gauge.gauge.data_points.add(as_int=3, time_unix_nano=9, start_time_unix_nano=8, flags=1)
    _set(number.attributes, room="kitchen")
    histogram = scope.metrics.add(name="latency")  # type: ignore[attr-defined]
    bucketed = histogram.histogram.data_points.add(count=5, sum=2.5)
    number_ctx = Context(group, scope, metric=gauge, point=number)  # type: ignore[arg-type]
    histogram_ctx = Context(group, scope, metric=histogram, point=bucketed)  # type: ignore[arg-type]
    for text in ('attributes["room"] == "kitchen"', "value_int == 3", "value_double == 0.0", "count == nil",
                 "sum == nil", "time_unix_nano == 9", "start_time_unix_nano == 8", "flags == FLAG_NO_RECORDED_VALUE",
                 'metric.name == "temp"', 'metric.unit == "C"', "metric.type == METRIC_DATA_TYPE_GAUGE",
                 'datapoint.attributes["room"] == "kitchen"'):
        assert compile_condition(text, "datapoint")(number_ctx) is True, text
    for text in ("count == 5", "sum == 2.5", "value_int == nil", "value_double == nil",
                 "metric.type == METRIC_DATA_TYPE_HISTOGRAM"):
        assert compile_condition(text, "datapoint")(histogram_ctx) is True, text


def test_resource_context_reads_the_resource_alone() -> None:
    group, scope = _metrics()
    ctx = Context(group, scope)  # type: ignore[arg-type]
    assert compile_condition('attributes["host"] == "a"', "resource")(ctx) is True
    assert compile_condition('resource.attributes["host"] == "b"', "resource")(ctx) is False
    with pytest.raises(OttlSyntaxError):
        compile_condition('scope.name == "meter"', "resource")
