"""Build OTLP requests for table-driven processor tests from plain Python values."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from edgeagent.processors.actions import to_any_value
from edgeagent.signals import Payload, Signal


def attrs_to_python(attributes: Any) -> list[tuple[str, Any]]:
    out = []
    for kv in attributes:
        out.append((kv.key, value_to_python(kv.value)))
    return out


def value_to_python(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: value_to_python(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [value_to_python(v) for v in value.array_value.values]
    return getattr(value, kind)


def fill(attributes: Any, pairs: list[tuple[str, Any]]) -> None:
    for key, value in pairs:
        attributes.add(key=key).value.CopyFrom(to_any_value(value))


def span_request(spans: list[dict], resource: list[tuple[str, Any]] | None = None, scope: str = "lib",
                 scope_version: str = "") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    fill(rs.resource.attributes, [("service.name", "svc")] if resource is None else resource)
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = scope, scope_version
    for spec in spans:
        span = ss.spans.add(name=spec.get("name", "op"), kind=spec.get("kind", 1))
        fill(span.attributes, spec.get("attrs", []))
    return request


def log_request(records: list[dict], resource: list[tuple[str, Any]] | None = None,
                scope: str = "lib") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    fill(rl.resource.attributes, resource or [("service.name", "svc")])
    sl = rl.scope_logs.add()
    sl.scope.name = scope
    for spec in records:
        record = sl.log_records.add(
            severity_number=spec.get("severity", 0), severity_text=spec.get("severity_text", "")
        )
        if "body" in spec:
            record.body.CopyFrom(to_any_value(spec["body"]))
        fill(record.attributes, spec.get("attrs", []))
    return request


def metric_request(metrics: list[dict], resource: list[tuple[str, Any]] | None = None) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    fill(rm.resource.attributes, resource or [("service.name", "svc")])
    sm = rm.scope_metrics.add()
    sm.scope.name = "lib"
    for spec in metrics:
        metric = sm.metrics.add(name=spec["name"])
        kind = spec.get("kind", "gauge")
        container = {"gauge": metric.gauge, "sum": metric.sum, "histogram": metric.histogram,
                     "summary": metric.summary, "exponential_histogram": metric.exponential_histogram}[kind]
        for point_attrs in spec.get("points", [[]]):
            point = container.data_points.add()
            fill(point.attributes, point_attrs)
    return request


def payload_of(signal: Signal, request: Any, metadata: dict[str, str] | None = None,
               client_address: str = "") -> Payload:
    payload = Payload.from_bytes(signal, request.SerializeToString(), metadata)
    payload.client_address = client_address
    return payload


def span_attrs(payload: Payload) -> list[list[tuple[str, Any]]]:
    message = payload.view()
    return [attrs_to_python(span.attributes) for rs in message.resource_spans for ss in rs.scope_spans
            for span in ss.spans]
