"""otelcol's kafka exporter writes, an edgeagent hub's kafka receiver reads: with each compression
otelcol 0.165 offers, in each encoding both speak, every span, data point and log record reaches
the upstream once and no message is counted as undecodable.

otelcol-contrib 0.165.0 receives from the OpenTelemetry SDK and writes to a tansu broker (franz-go,
required_acks 1, otelcol's default: tansu has no idempotent producers, which acks all asks); the hub
reads the topics and forwards upstream.
"""

from __future__ import annotations

import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.kafka import hub_config
from tests.helpers.net import wait_until
from tests.interop.peers import OtelcolPorts, all_delivered, assert_exactly_once, send_every_signal, wait_queues_empty

pytestmark = pytest.mark.e2e

TOPICS = ("otlp_spans", "otlp_metrics", "otlp_logs")


@pytest.mark.parametrize("compression,encoding", [("none", "otlp_proto"), ("gzip", "otlp_proto"),
                                                  ("snappy", "otlp_proto"), ("lz4", "otlp_json"),
                                                  ("zstd", "otlp_json")])
def test_a_hub_reads_every_item_otelcols_kafka_exporter_wrote_once(agents, otelcol, upstream, kafka, tmp_path,
                                                                   compression, encoding):
    for topic in TOPICS:
        kafka.create_topic(topic, 2)
    ports = AgentProcess(args=[])
    config = hub_config(tmp_path / "hub.yaml", kafka.bootstrap, upstream.url, ports,
                        **{signal: {"encoding": encoding} for signal in ("traces", "metrics", "logs")})
    hub = agents(["run", "--config", config, "--state-dir", str(tmp_path / "hub")], ports=ports,
                 port_overrides=False)
    collector_ports = OtelcolPorts()
    # tansu closes the connection on franz-go's newest ApiVersions request: a pinned version avoids it
    collector = otelcol(collector_ports.config("kafka", {
        "brokers": [kafka.bootstrap], "protocol_version": "2.1.0", "producer": {"compression": compression},
        **{signal: {"encoding": encoding} for signal in ("traces", "metrics", "logs")}}))
    spans = send_every_signal("grpc", collector_ports.grpc, collector_ports.http)
    try:
        wait_until(lambda: all_delivered(upstream), timeout=30, interval=0.25,
                   message="every item upstream through otelcol, Kafka and the hub")
    except AssertionError:
        raise AssertionError(f"{collector.log()}") from None
    wait_queues_empty(hub)
    assert_exactly_once(upstream, spans, "grpc")
    for items in ("spans", "metric_points", "log_records"):
        assert hub.metric(f"otelcol_kafka_receiver_unmarshal_failed_{items}") == 0
