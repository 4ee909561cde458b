"""edgeagent's OTLP exporters, with each compression they offer, into otelcol's receiver: every
span, data point and log record reaches the upstream once.

edgeagent receives from the OpenTelemetry SDK and exports to otelcol-contrib 0.165.0, which
forwards to the test upstream; otelcol's own receiver counts are a second, edgeagent-free tally.
"""

from __future__ import annotations

import pytest

from tests.helpers.configs import grpc_exporter, http_exporter
from tests.helpers.net import wait_until
from tests.interop.peers import (
    LOGS,
    POINTS,
    SPANS,
    OtelcolPorts,
    agent_config,
    all_delivered,
    assert_exactly_once,
    otelcol_http_exporter,
    send_every_signal,
    wait_queues_empty,
)

pytestmark = pytest.mark.e2e


def _into_otelcol(agents, otelcol, upstream, tmp_path, exporter: str, settings) -> None:
    ports = OtelcolPorts()
    collector = otelcol(ports.config("otlp_http", otelcol_http_exporter(upstream.url, "none")))
    config = agent_config(tmp_path / "agent.yaml", exporter, settings(ports))
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
    spans = send_every_signal("http", agent.grpc_port, agent.http_port)

    wait_until(lambda: all_delivered(upstream), timeout=30, interval=0.1, message="every item upstream")
    wait_queues_empty(agent)
    assert_exactly_once(upstream, spans, "http")
    accepted = [collector.metric(f"otelcol_receiver_accepted_{items}", receiver="otlp")
                for items in ("spans", "metric_points", "log_records")]
    assert accepted == [SPANS, POINTS, LOGS]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd", "deflate", "zlib", "snappy", "x-snappy-framed", "lz4"])
def test_edgeagent_otlphttp_exporter_reaches_otelcol_once_per_item(agents, otelcol, upstream, tmp_path, compression):
    _into_otelcol(agents, otelcol, upstream, tmp_path, "otlphttp",
                  lambda ports: http_exporter(f"http://127.0.0.1:{ports.http}", compression=compression))


# every grpc-encoding otelcol's exporter offers, sent as such by the agent's own gRPC client
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd", "snappy"])
def test_edgeagent_otlp_exporter_reaches_otelcol_once_per_item(agents, otelcol, upstream, tmp_path, compression):
    _into_otelcol(agents, otelcol, upstream, tmp_path, "otlp",
                  lambda ports: grpc_exporter(f"127.0.0.1:{ports.grpc}", compression=compression))


# otlphttp's `encoding: json`: otelcol's receiver takes OTLP/JSON bodies and answers in JSON
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_edgeagent_otlphttp_json_encoding_reaches_otelcol_once_per_item(agents, otelcol, upstream, tmp_path,
                                                                        compression):
    _into_otelcol(agents, otelcol, upstream, tmp_path, "otlphttp",
                  lambda ports: http_exporter(f"http://127.0.0.1:{ports.http}", compression=compression,
                                              encoding="json"))
