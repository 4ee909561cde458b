"""The batch processor's sizes side by side with otelcol 0.165's: a request larger than
send_batch_max_size leaves a real edgeagent and a real otelcol in the same number of upstream
requests of the same sizes, counted as otelcol counts them (spans, data points, log records)."""

from __future__ import annotations

from typing import Any

import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

BATCH = {"send_batch_size": 10, "send_batch_max_size": 10, "timeout": "200ms"}
SIGNALS = ("traces", "metrics", "logs")


def _traces() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for group_number in range(2):
        spans = request.resource_spans.add().scope_spans.add().spans
        for number in range(13):
            spans.add(name=f"s{number}", trace_id=bytes([group_number + 1, number + 1]) * 8,
                      span_id=bytes([group_number + 1, number + 1]) * 4)
    return request


def _metrics() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    points = scope.metrics.add(name="many").sum.data_points
    for number in range(23):
        points.add(as_int=number, time_unix_nano=number + 1)
    scope.metrics.add(name="one").gauge.data_points.add(as_double=1.0)
    scope.metrics.add(name="h").histogram.data_points.add(count=2)
    return request


def _logs() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for number in range(26):
        records.add(time_unix_nano=number + 1).body.string_value = f"line {number}"
    return request


def _config(upstream: Upstream, endpoint: str, exporter: str) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": endpoint}}}},
        "processors": {"batch": BATCH},
        "exporters": {exporter: {"endpoint": upstream.url}},
        "service": {"pipelines": {signal: {"receivers": ["otlp"], "processors": ["batch"], "exporters": [exporter]}
                                  for signal in SIGNALS}},
    }


def _sizes(upstream: Upstream, signal: str) -> list[int]:
    sizes = []
    for received in upstream.received(signal):
        message = received.message
        if signal == "traces":
            sizes.append(sum(len(scope.spans) for group in message.resource_spans for scope in group.scope_spans))
        elif signal == "logs":
            sizes.append(sum(len(scope.log_records) for group in message.resource_logs
                             for scope in group.scope_logs))
        else:
            sizes.append(sum(len(getattr(metric, metric.WhichOneof("data")).data_points)
                             for group in message.resource_metrics for scope in group.scope_metrics
                             for metric in scope.metrics))
    return sorted(sizes)


def test_a_request_over_send_batch_max_size_is_split_alike_in_both(agents, otelcol, tmp_path):
    ours, theirs = Upstream(free_port()).start(), Upstream(free_port()).start()
    try:
        settings = _config(ours, "127.0.0.1:0", "otlp_http")
        settings["extensions"] = {"health_check": {}}
        settings["service"]["extensions"] = ["health_check"]
        config = tmp_path / "agent.yaml"
        config.write_text(yaml.safe_dump(settings))
        agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")])
        reference_port = free_port()
        otelcol(_config(theirs, f"127.0.0.1:{reference_port}", "otlphttp"))
        for port in (agent.http_port, reference_port):
            assert post(port, _traces())[0] == 200
            assert post(port, _metrics(), "/v1/metrics")[0] == 200
            assert post(port, _logs(), "/v1/logs")[0] == 200
        totals = {"traces": 26, "metrics": 25, "logs": 26}
        wait_until(lambda: all(sum(_sizes(up, signal)) == totals[signal] for up in (ours, theirs)
                               for signal in SIGNALS), timeout=20, message="every item upstream of both")
        for signal in SIGNALS:
            assert _sizes(ours, signal) == _sizes(theirs, signal), signal
            assert max(_sizes(theirs, signal)) == 10
    finally:
        ours.stop()
        theirs.stop()
