"""sending_queue.enabled: false forwards synchronously: the client's answer follows the upstream's."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.net import free_port
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
exporters:
  otlphttp:
    endpoint: ${env:UPSTREAM}
    sending_queue:
      enabled: false
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"""


def _post(port: int, spans: int = 1) -> tuple[int, str | None]:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(1, spans + 1):
        scope.spans.add(name="sync", span_id=bytes([index]) * 8, trace_id=b"\x02" * 16)
    status, headers = post(port, request)
    return status, headers.get("Retry-After")


def test_without_a_queue_upstream_failures_are_retryable_for_the_client(agents, tmp_path):
    config = tmp_path / "sync.yaml"
    config.write_text(CONFIG)
    port = free_port()
    agent = agents(["run", "--config", str(config)], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    status, retry_after = _post(agent.http_port)
    assert status == 503 and retry_after  # upstream down: the client keeps the data and retries

    upstream = Upstream(port).start()
    try:
        assert _post(agent.http_port)[0] == 200
        assert upstream.span_ids() == {b"\x01" * 8}  # delivered before the client got its OK
        upstream.status = 400
        assert _post(agent.http_port)[0] == 503  # still retryable for the client: nothing was stored
    finally:
        upstream.stop()
    assert agent.terminate() == 0


def test_without_a_queue_a_413_splits_the_request_and_the_sends_are_counted(agents, tmp_path):
    config = tmp_path / "sync.yaml"
    config.write_text(CONFIG)
    upstream = Upstream(free_port()).start()
    try:
        upstream.max_items = 2
        agent = agents(["run", "--config", str(config)], env={"UPSTREAM": upstream.url})
        assert _post(agent.http_port, spans=5)[0] == 200
        assert upstream.span_ids() == {bytes([index]) * 8 for index in range(1, 6)}
        assert all(call.items <= 2 for call in upstream.calls if call.status == 200)
        assert agent.metric("otelcol_exporter_sent_spans", exporter="otlphttp") == 5
        upstream.status = 400
        assert _post(agent.http_port)[0] == 503
        assert agent.metric("otelcol_exporter_send_failed_spans", exporter="otlphttp") == 1
        assert agent.terminate() == 0
    finally:
        upstream.stop()
