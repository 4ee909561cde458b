"""A bearer token file missing at start, without retry_on_failure, as otelcol 0.165 takes it: the
agent starts, its receiver answers every request 401 (a token that appears later included: the
file is read at the next start), its exporter sends the header empty, and health names the file."""

from __future__ import annotations

import http.client

import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.agent import AgentProcess
from tests.helpers.net import free_port, wait_until
from tests.helpers.upstream import Upstream


def _post(port: int, token: str | None) -> int:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="raw", span_id=b"\x01" * 8, trace_id=b"\x02" * 16)
    headers = {"Content-Type": "application/x-protobuf"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/v1/traces", body=request.SerializeToString(), headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_missing_token_file_starts_the_agent_and_every_request_gets_401(tmp_path):
    upstream = Upstream(free_port()).start()
    agent = AgentProcess(args=[], log_path=str(tmp_path / "agent.log"), ready_path="/health/live")
    guarded, open_port = agent.http_port, free_port()
    config = {
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{agent.health_port}"},
                       "bearertokenauth/clients": {"filename": str(tmp_path / "clients.token")},
                       "bearertokenauth/upstream": {"filename": str(tmp_path / "upstream.token")}},
        "receivers": {"otlp/guarded": {"protocols": {"http": {
                          "endpoint": f"127.0.0.1:{guarded}", "auth": {"authenticator": "bearertokenauth/clients"}}}},
                      "otlp/open": {"protocols": {"http": {"endpoint": f"127.0.0.1:{open_port}"}}}},
        "exporters": {"otlphttp": {"endpoint": upstream.url, "auth": {"authenticator": "bearertokenauth/upstream"}}},
        "service": {"extensions": ["health_check", "bearertokenauth/clients", "bearertokenauth/upstream"],
                    "telemetry": {"metrics": {"readers": [{"pull": {"exporter": {"prometheus": {
                        "host": "127.0.0.1", "port": agent.metrics_port}}}}]}},
                    "pipelines": {"traces": {"receivers": ["otlp/guarded", "otlp/open"], "exporters": ["otlphttp"]}}},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    agent.args = ["run", "--config", str(path), "--state-dir", str(tmp_path / "state")]
    try:
        agent.start()
        assert _post(guarded, "late-token") == 401 and _post(guarded, None) == 401
        (tmp_path / "clients.token").write_text("late-token\n")
        assert _post(guarded, "late-token") == 401  # read at the next start only, as otelcol
        assert _post(open_port, None) == 200
        wait_until(lambda: upstream.received("traces"), timeout=30, message="the export at the upstream")
        assert upstream.received("traces")[0].headers.get("Authorization") == ""
        failures = agent.health("/health")[1]["failures"]
        assert set(failures) == {"extensions::bearertokenauth/clients", "extensions::bearertokenauth/upstream"}
        assert "clients.token" in failures["extensions::bearertokenauth/clients"]
    finally:
        agent.kill()
        upstream.stop()
