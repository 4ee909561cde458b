"""Configs and counts shared by the tests that put otelcol and edgeagent on either side of OTLP."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers.agent import AgentProcess
from tests.helpers.configs import FAST_RETRY
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_logs, send_metrics, send_spans
from tests.helpers.upstream import Upstream

SIGNALS = ("traces", "metrics", "logs")
SPANS, POINTS, LOGS = 300, 7, 11


def pipelines(receiver: str, exporter: str) -> dict:
    return {signal: {"receivers": [receiver], "exporters": [exporter]} for signal in SIGNALS}


def agent_config(path: Path, exporter: str, settings: dict) -> str:
    """edgeagent: the otlp receiver feeding `exporter` in a traces, a metrics and a logs pipeline."""
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "exporters": {exporter: settings},
        "extensions": {"health_check": {}},
        "service": {"extensions": ["health_check"], "pipelines": pipelines("otlp", exporter)},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


class OtelcolPorts:
    """The loopback ports of otelcol's OTLP receiver, chosen by the test."""

    def __init__(self) -> None:
        self.grpc, self.http = free_port(), free_port()

    def config(self, exporter: str, settings: dict) -> dict:
        """otelcol: its otlp receiver feeding `exporter` in a traces, a metrics and a logs pipeline."""
        return {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{self.grpc}"},
                                                 "http": {"endpoint": f"127.0.0.1:{self.http}"}}}},
            "exporters": {exporter: settings},
            "service": {"pipelines": pipelines("otlp", exporter)},
        }


def otelcol_http_exporter(url: str, compression: str) -> dict:
    """otelcol's `otlp_http` exporter with fast retries, so a refusal shows in its metrics at once."""
    return {"endpoint": url, "compression": compression, "retry_on_failure": FAST_RETRY}


def otelcol_grpc_exporter(endpoint: str, compression: str) -> dict:
    return {"endpoint": endpoint, "tls": {"insecure": True}, "compression": compression,
            "retry_on_failure": FAST_RETRY}


def send_every_signal(transport: str, grpc_port: int, http_port: int) -> set[bytes]:
    """SPANS spans, POINTS data points and LOGS log records with the OpenTelemetry SDK; the span ids."""
    port = grpc_port if transport == "grpc" else http_port
    spans = send_spans(transport, port, SPANS, service="interop")
    send_metrics(transport, port, points=POINTS, service="interop")
    send_logs(transport, port, count=LOGS, service="interop")
    return spans


def delivered(upstream: Upstream) -> tuple[int, int, int]:
    return len(upstream.spans()), len(upstream.data_points()), len(upstream.log_records())


def all_delivered(upstream: Upstream) -> bool:
    return all(got >= sent for got, sent in zip(delivered(upstream), (SPANS, POINTS, LOGS), strict=True))


def wait_queues_empty(agent: AgentProcess) -> None:
    """edgeagent has delivered (and removed from its queue) all it accepted, of every signal."""
    wait_until(lambda: all(agent.metric("edgeagent_queue_items", data_type=signal) == 0 for signal in SIGNALS),
               timeout=10, message="edgeagent's queues empty")


def assert_exactly_once(upstream: Upstream, spans: set[bytes], transport: str) -> None:
    """Every item the SDK sent over `transport` arrived once: nothing lost, nothing twice."""
    assert delivered(upstream) == (SPANS, POINTS, LOGS)
    assert upstream.span_ids() == spans
    assert {record.body.string_value for record in upstream.log_records()} == \
        {f"record {index} over {transport}" for index in range(LOGS)}
    routes = {kv.value.string_value for point in upstream.data_points() for kv in point.attributes if kv.key == "route"}
    assert routes == {f"/r{index}" for index in range(POINTS)}
