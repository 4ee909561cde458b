"""otelcol's OTLP exporters, with each compression they offer, into edgeagent's receivers: every
span, data point and log record reaches the upstream once.

otelcol-contrib 0.165.0 receives from the OpenTelemetry SDK and exports to edgeagent; edgeagent
forwards to the test upstream.
"""

from __future__ import annotations

import pytest

from tests.helpers.configs import http_exporter
from tests.helpers.net import wait_until
from tests.interop.peers import (
    OtelcolPorts,
    agent_config,
    all_delivered,
    assert_exactly_once,
    otelcol_grpc_exporter,
    otelcol_http_exporter,
    send_every_signal,
    wait_queues_empty,
)

pytestmark = pytest.mark.e2e


# every compression otelcol 0.165's exporters offer
HTTP_COMPRESSIONS = ["none", "gzip", "zstd", "deflate", "zlib", "snappy", "lz4"]
GRPC_COMPRESSIONS = ["none", "gzip", "zstd", "snappy"]


def _through_edgeagent(agents, otelcol, upstream, tmp_path, exporter: str, settings) -> None:
    config = agent_config(tmp_path / "agent.yaml", "otlphttp", http_exporter(upstream.url))
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
    ports = OtelcolPorts()
    collector = otelcol(ports.config(exporter, settings(agent)))
    spans = send_every_signal("grpc", ports.grpc, ports.http)

    def refused() -> bool:
        return any(collector.metric(f"otelcol_exporter_send_failed_{items}") > 0
                   for items in ("spans", "metric_points", "log_records"))

    wait_until(lambda: all_delivered(upstream) or refused(), timeout=30, interval=0.1,
               message="every item upstream, or otelcol's exporter refused")
    assert not refused(), f"edgeagent refused what otelcol sent:\n{collector.log()}"
    wait_queues_empty(agent)
    assert_exactly_once(upstream, spans, "grpc")


@pytest.mark.parametrize("compression", HTTP_COMPRESSIONS)
def test_otelcol_otlp_http_exporter_reaches_edgeagent_once_per_item(agents, otelcol, upstream, tmp_path,
                                                                    compression):
    _through_edgeagent(agents, otelcol, upstream, tmp_path, "otlp_http",
                       lambda agent: otelcol_http_exporter(f"http://127.0.0.1:{agent.http_port}", compression))


@pytest.mark.parametrize("compression", GRPC_COMPRESSIONS)
def test_otelcol_otlp_grpc_exporter_reaches_edgeagent_once_per_item(agents, otelcol, upstream, tmp_path,
                                                                    compression):
    _through_edgeagent(agents, otelcol, upstream, tmp_path, "otlp_grpc",
                       lambda agent: otelcol_grpc_exporter(f"127.0.0.1:{agent.grpc_port}", compression))
