"""The filter processor's OTTL conditions side by side with otelcol 0.165's: the same traces,
metrics and logs sent to a real edgeagent and a real otelcol, both with the same filter config,
leave the same spans, span events, metrics, data points and log records upstream."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.processors.actions import to_any_value
from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

FILTER: dict[str, Any] = {
    "error_mode": "ignore",
    "trace_conditions": [
        'span.name == "healthz"',
        'resource.attributes["env"] == "dev"',
        'scope.name == "noisy.lib"',
        'spanevent.name == "cache.miss"',
        'span.kind == SPAN_KIND_CLIENT and span.attributes["http.route"] == "/internal"',
        'IsMatch(span.attributes["user"], "^bot-")',
        'span.attributes["list"][5] == "x"',  # out of range on the one span with a list: an error, ignored
    ],
    "metric_conditions": [
        {"conditions": ["metric.type == METRIC_DATA_TYPE_HISTOGRAM", 'metric.name == "debug.gauge"']},
        {"conditions": ['datapoint.attributes["state"] == "idle"', "datapoint.value_int > 100"]},
        {"context": "metric", "conditions": ['HasAttrOnDatapoint("bad", "true")']},
    ],
    "log_conditions": [
        'IsMatch(log.body, ".*password.*")',
        "log.severity_number < SEVERITY_NUMBER_WARN and log.severity_number != SEVERITY_NUMBER_UNSPECIFIED",
        'log.attributes["drop"] == true',
    ],
}


def _kv(attributes: Any, **values: Any) -> None:
    for key, value in values.items():
        attributes.add(key=key).value.CopyFrom(to_any_value(value))


def _traces() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for env in ("prod", "dev"):
        group = request.resource_spans.add()
        _kv(group.resource.attributes, **{"service.name": "shop", "env": env})
        for scope_name in ("shop.http", "noisy.lib"):
            scope = group.scope_spans.add()
            scope.scope.name = scope_name
            for number, (name, kind, attrs) in enumerate([
                    ("GET /cart", 2, {"user": "ann"}), ("healthz", 2, {}), ("call", 3, {"http.route": "/internal"}),
                    ("call", 3, {"http.route": "/public"}), ("crawl", 2, {"user": "bot-7"}),
                    ("listy", 1, {"list": ["a", "b"]})]):
                span = scope.spans.add(name=name, kind=kind, trace_id=bytes([number + 1]) * 16,
                                       span_id=bytes([number + 1, len(env), len(scope_name)]) * 2 + b"\0\0")
                _kv(span.attributes, **attrs)
                span.events.add(name="cache.miss")
                span.events.add(name="retry")
    return request


def _metrics() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    _kv(request.resource_metrics[0].resource.attributes, **{"service.name": "shop"})
    scope.scope.name = "meter"
    connections = scope.metrics.add(name="db.connections")
    for state, value in (("idle", 3), ("used", 5), ("used", 500)):
        _kv(connections.sum.data_points.add(as_int=value, time_unix_nano=1).attributes, state=state)
    only_idle = scope.metrics.add(name="pool.idle")
    _kv(only_idle.gauge.data_points.add(as_int=1).attributes, state="idle")
    latency = scope.metrics.add(name="latency")
    latency.histogram.data_points.add(count=2, sum=1.5)
    scope.metrics.add(name="debug.gauge").gauge.data_points.add(as_double=1.0)
    flagged = scope.metrics.add(name="flagged")
    _kv(flagged.gauge.data_points.add(as_int=1).attributes, bad="true")
    _kv(flagged.gauge.data_points.add(as_int=2).attributes, bad="false")
    kept = scope.metrics.add(name="requests")
    _kv(kept.sum.data_points.add(as_int=7).attributes, route="/a")
    return request


def _logs() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for body, severity, attrs in [("login ok", 9, {}), ("password=hunter2", 17, {}), ("disk full", 17, {}),
                                  ("no severity", 0, {}), ("debug detail", 5, {}), ("drop me", 13, {"drop": True}),
                                  ("keep me", 13, {"drop": False})]:
        record = scope.log_records.add(severity_number=severity)
        record.body.string_value = body
        _kv(record.attributes, **attrs)
    return request


def _agent_config(upstream: Upstream, settings: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"http": {}}}},
        "processors": {"filter/ottl": settings},
        "exporters": {"otlp_http": {"endpoint": upstream.url, "sending_queue": {"enabled": False}}},
        "extensions": {"health_check": {}},
        "service": {"extensions": ["health_check"], "pipelines": {
            signal: {"receivers": ["otlp"], "processors": ["filter/ottl"], "exporters": ["otlp_http"]}
            for signal in ("traces", "metrics", "logs")}},
    })


def _otelcol_config(upstream: Upstream, port: int, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
        "processors": {"filter/ottl": settings},
        "exporters": {"otlphttp": {"endpoint": upstream.url, "sending_queue": {"enabled": False}}},
        "service": {"pipelines": {
            signal: {"receivers": ["otlp"], "processors": ["filter/ottl"], "exporters": ["otlphttp"]}
            for signal in ("traces", "metrics", "logs")}},
    }


def _survivors(upstream: Upstream) -> dict[str, list]:
    spans = sorted((span.span_id.hex(), span.name, tuple(event.name for event in span.events))
                   for span in upstream.spans())
    metrics = sorted((metric.name, tuple(sorted(point.SerializeToString() for point in
                                                 getattr(metric, metric.WhichOneof("data")).data_points)))
                     for received in upstream.received("metrics") for group in received.message.resource_metrics
                     for scope in group.scope_metrics for metric in scope.metrics)
    logs = sorted(record.body.string_value for record in upstream.log_records())
    return {"spans": spans, "metrics": metrics, "logs": logs}


def _pair(agents, otelcol, directory: str, settings: dict[str, Any]) -> tuple[Upstream, Upstream, Any, int]:
    """(our upstream, otelcol's upstream, the agent, otelcol's OTLP/HTTP port), both filtering with `settings`."""
    ours, theirs = Upstream(free_port()).start(), Upstream(free_port()).start()
    config = Path(directory) / "agent.yaml"
    config.write_text(_agent_config(ours, settings))
    agent = agents(["run", "--config", str(config)])
    reference_port = free_port()
    otelcol(_otelcol_config(theirs, reference_port, settings))
    return ours, theirs, agent, reference_port


def test_the_same_items_survive_edgeagents_filter_and_otelcols(agents, otelcol):
    with tempfile.TemporaryDirectory() as directory:
        ours, theirs, agent, reference_port = _pair(agents, otelcol, directory, FILTER)
        try:
            for port in (agent.http_port, reference_port):
                assert post(port, _traces())[0] == 200
                assert post(port, _metrics(), "/v1/metrics")[0] == 200
                assert post(port, _logs(), "/v1/logs")[0] == 200
            wait_until(lambda: all(len(up.received(signal)) == 1 for up in (ours, theirs)
                                   for signal in ("traces", "metrics", "logs")), timeout=20,
                       message="one request of each signal upstream of both")
            expected = _survivors(theirs)
            assert _survivors(ours) == expected
            # the comparison is not vacuous: each signal kept some items and dropped others
            assert 0 < len(expected["spans"]) < 24 and 0 < len(expected["logs"]) < 7
            assert {name for name, _ in expected["metrics"]} == {"db.connections", "requests"}
            assert agent.metric("otelcol_processor_filter_spans_filtered") == 24 - len(expected["spans"])
            assert agent.metric("otelcol_processor_filter_logs_filtered") == 7 - len(expected["logs"])
        finally:
            ours.stop()
            theirs.stop()


def test_a_failing_condition_under_propagate_fails_the_request_in_both(agents, otelcol):
    settings = {"error_mode": "propagate", "trace_conditions": ['span.attributes["list"][5] == "x"']}
    with tempfile.TemporaryDirectory() as directory:
        ours, theirs, agent, reference_port = _pair(agents, otelcol, directory, settings)
        try:
            statuses = [post(port, _traces())[0] for port in (agent.http_port, reference_port)]
            assert statuses[0] == statuses[1] and statuses[0] >= 500, statuses
            assert ours.received("traces") == [] and theirs.received("traces") == []
        finally:
            ours.stop()
            theirs.stop()


EXPLICIT: dict[str, Any] = {
    "traces": {"resource": ['attributes["env"] == "dev"'], "span": ['kind == SPAN_KIND_SERVER and name != "healthz"'],
               "spanevent": ['name == "retry"']},
    "metrics": {"metric": ['type == METRIC_DATA_TYPE_NONE', 'IsMatch(name, "^debug")'],
                "datapoint": ['metric.name == "db.connections" and attributes["state"] != "used"',
                              "value_double == nil and count == nil"]},
    "logs": {"log_record": ['body.string == "7"', 'IsMatch(body["msg"], "secret")', "severity_number == 0"]},
}


def _edge_metrics() -> ExportMetricsServiceRequest:
    request = _metrics()
    scope = request.resource_metrics[0].scope_metrics[0]
    scope.metrics.add(name="no.data")  # no data kind at all
    scope.metrics.add(name="empty.sum").sum.SetInParent()  # a kind without points
    return request


def _edge_logs() -> ExportLogsServiceRequest:
    request = _logs()
    records = request.resource_logs[0].scope_logs[0].log_records
    records.add(severity_number=9).body.int_value = 7
    structured = records.add(severity_number=9)
    _kv(structured.body.kvlist_value.values, msg="a secret here")
    _kv(records.add(severity_number=9).body.kvlist_value.values, msg="fine")
    return request


def test_the_older_explicit_lists_drop_the_same_items_in_both(agents, otelcol):
    with tempfile.TemporaryDirectory() as directory:
        ours, theirs, _, reference_port = _pair(agents, otelcol, directory, EXPLICIT)
        try:
            for port in (_.http_port, reference_port):
                assert post(port, _traces())[0] == 200
                assert post(port, _edge_metrics(), "/v1/metrics")[0] == 200
                assert post(port, _edge_logs(), "/v1/logs")[0] == 200
            wait_until(lambda: all(len(up.received(signal)) == 1 for up in (ours, theirs)
                                   for signal in ("traces", "metrics", "logs")), timeout=20,
                       message="one request of each signal upstream of both")
            expected = _survivors(theirs)
            assert _survivors(ours) == expected
            assert 0 < len(expected["spans"]) < 24 and 0 < len(expected["metrics"]) < 9
        finally:
            ours.stop()
            theirs.stop()


DATA = Path(__file__).resolve().parents[1] / "testdata" / "filter"


def _otelcol_validates(binary: Path, directory: Path, settings: dict[str, Any]) -> subprocess.CompletedProcess:
    path = directory / "otelcol.yaml"
    path.write_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {"filter/x": settings}, "exporters": {"nop": {}},
        "service": {"pipelines": {signal: {"receivers": ["otlp"], "processors": ["filter/x"], "exporters": ["nop"]}
                                  for signal in ("traces", "metrics", "logs")}}}))
    return subprocess.run([str(binary), "validate", "--config", str(path)], capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)


def test_otelcol_accepts_the_good_filter_configs_and_refuses_the_bad_ones(otelcol_binary, tmp_path):
    for name, settings in yaml.safe_load((DATA / "good.yaml").read_text()).items():
        result = _otelcol_validates(otelcol_binary, tmp_path, settings)
        assert result.returncode == 0, f"{name}: {result.stderr[-500:]}"
    for case in yaml.safe_load((DATA / "bad.yaml").read_text()):
        result = _otelcol_validates(otelcol_binary, tmp_path, case["config"])
        assert (result.returncode == 0) == ("otelcol_accepts" in case), f"{case}: {result.stderr[-500:]}"
