"""Trace and span ids of the wrong length side by side with otelcol 0.165's: pdata refuses a request
holding one (a span's, a parent's, a link's, a log record's or an exemplar's id that is neither
empty nor 16 / 8 bytes) with a 400, and so must the agent. Accepted, such a request was queued and
merged with other clients' data into batches that an otelcol upstream refused whole with a 400:
dead-lettered, the good data with the bad."""

from __future__ import annotations

import http.client
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

TRACE, SPAN = bytes(range(1, 17)), bytes(range(1, 9))


def _spans(**ids: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add(name="good", trace_id=TRACE, span_id=SPAN)
    link = ids.pop("link", None)
    span = spans.add(name="odd", **{"trace_id": TRACE, "span_id": SPAN, **ids})
    if link is not None:
        span.links.append(Span.Link(trace_id=link, span_id=SPAN))
    return request


def _log(trace_id: bytes = b"", span_id: bytes = b"") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=1).body.string_value = "good"
    records.add(time_unix_nano=2, trace_id=trace_id, span_id=span_id).body.string_value = "odd"
    return request


def _exemplar(trace_id: bytes = b"", span_id: bytes = b"") -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="latency")
    metric.histogram.aggregation_temporality = 2
    point = metric.histogram.data_points.add(count=1, sum=2.0, time_unix_nano=1)
    point.exemplars.add(as_double=2.0, time_unix_nano=1, trace_id=trace_id, span_id=span_id)
    metric.histogram.data_points.add(count=1, sum=1.0, time_unix_nano=2)
    return request


ODD = {
    "span trace_id of 17 bytes": (_spans(trace_id=TRACE + b"x"), "/v1/traces"),
    "span span_id of 3 bytes": (_spans(span_id=b"abc"), "/v1/traces"),
    "span parent_span_id of 4 bytes": (_spans(parent_span_id=b"abcd"), "/v1/traces"),
    "link trace_id of 15 bytes": (_spans(link=TRACE[:15]), "/v1/traces"),
    "log record trace_id of 5 bytes": (_log(trace_id=b"12345"), "/v1/logs"),
    "log record span_id of 9 bytes": (_log(span_id=SPAN + b"x"), "/v1/logs"),
    "exemplar trace_id of 8 bytes": (_exemplar(trace_id=SPAN), "/v1/metrics"),
    "exemplar span_id of 16 bytes": (_exemplar(span_id=TRACE), "/v1/metrics"),
}
FINE = {  # empty ids are no ids: both take them
    "span without parent": (_spans(parent_span_id=b""), "/v1/traces"),
    "log record without ids": (_log(), "/v1/logs"),
    "exemplar with ids": (_exemplar(TRACE, SPAN), "/v1/metrics"),
}
JSON_LOG = (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"odd"},'
            b'"traceId":"0102030405","spanId":"0102030405060708"}]}]}]}')


def _config(endpoint: str, upstream: Upstream, exporter: str) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": endpoint}}}},
        "exporters": {exporter: {"endpoint": upstream.url}},
        "service": {"pipelines": {signal: {"receivers": ["otlp"], "exporters": [exporter]}
                                  for signal in ("traces", "metrics", "logs")}},
    }


def _post_json(port: int, body: bytes, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.fixture
def both(agents, otelcol, tmp_path):
    ours, theirs = Upstream(free_port()).start(), Upstream(free_port()).start()
    try:
        settings = _config("127.0.0.1:0", ours, "otlp_http")
        settings["extensions"] = {"health_check": {}}
        settings["service"]["extensions"] = ["health_check"]
        config = tmp_path / "agent.yaml"
        config.write_text(yaml.safe_dump(settings))
        agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")])
        reference = free_port()
        otelcol(_config(f"127.0.0.1:{reference}", theirs, "otlphttp"))
        yield {"edgeagent": (agent.http_port, ours), "otelcol": (reference, theirs)}
    finally:
        ours.stop()
        theirs.stop()


def test_a_request_with_an_id_of_the_wrong_length_is_refused_alike_in_both(both):
    answers = {name: {case: post(port, request, path)[0] for case, (request, path) in {**ODD, **FINE}.items()}
               for name, (port, _) in both.items()}
    for name, (port, _) in both.items():
        answers[name]["OTLP/JSON log record traceId of 5 bytes"] = _post_json(port, JSON_LOG, "/v1/logs")
    assert answers["edgeagent"] == answers["otelcol"]
    assert {answers["otelcol"][case] for case in ODD} == {400}
    assert {answers["otelcol"][case] for case in FINE} == {200}
    # what each took arrives upstream, and nothing of what each refused
    expected = {"traces": 2, "logs": 2, "metrics": 2}
    for _, upstream in both.values():
        wait_until(lambda upstream=upstream: (len(upstream.spans()), len(upstream.log_records()),
                                              len(upstream.data_points())) == tuple(expected.values()),
                   timeout=10, message="the accepted requests upstream")
