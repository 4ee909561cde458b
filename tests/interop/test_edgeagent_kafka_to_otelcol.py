"""edgeagent's kafka exporter writes, otelcol's kafka receiver reads: with each compression both
offer, in each encoding both speak, keyed or not, every span, data point and log record reaches the
upstream once and otelcol counts no message as undecodable.

An edge agent receives from the OpenTelemetry SDK and writes to a tansu broker; otelcol-contrib
0.165.0 reads the topics (franz-go) and exports over OTLP/HTTP to the test upstream.
"""

from __future__ import annotations

import pytest

from tests.helpers.configs import FAST_RETRY
from tests.helpers.net import wait_until
from tests.interop.peers import agent_config, all_delivered, assert_exactly_once, pipelines, send_every_signal

pytestmark = pytest.mark.e2e

TOPICS = ("otlp_spans", "otlp_metrics", "otlp_logs")
SIGNALS = ("traces", "metrics", "logs")
KEYED = {"partition_traces_by_id": True, "partition_metrics_by_resource_attributes": True,
         "partition_logs_by_resource_attributes": True}


@pytest.mark.parametrize("compression,encoding,keyed", [("none", "otlp_proto", False), ("gzip", "otlp_proto", True),
                                                        ("snappy", "otlp_json", False), ("lz4", "otlp_proto", True),
                                                        ("zstd", "otlp_json", True)])
def test_otelcols_kafka_receiver_reads_every_item_edgeagent_wrote_once(agents, otelcol, upstream, kafka, tmp_path,
                                                                        compression, encoding, keyed):
    for topic in TOPICS:
        kafka.create_topic(topic, 2)
    encodings = {signal: {"encoding": encoding} for signal in SIGNALS}
    edge = agents(["run", "--config", agent_config(tmp_path / "edge.yaml", "kafka", {
        "brokers": [kafka.bootstrap], "producer": {"compression": compression}, **encodings,
        **(KEYED if keyed else {})}), "--state-dir", str(tmp_path / "edge")])
    # tansu closes the connection on franz-go's newest ApiVersions request: a pinned version avoids it
    collector = otelcol({
        "receivers": {"kafka": {"brokers": [kafka.bootstrap], "protocol_version": "2.1.0",
                                "initial_offset": "earliest", "group_id": "otelcol",
                                **{signal: {"topics": [topic], "encoding": encoding}
                                   for signal, topic in zip(SIGNALS, TOPICS, strict=True)}}},
        "exporters": {"otlp_http": {"endpoint": upstream.url, "retry_on_failure": FAST_RETRY}},
        "service": {"pipelines": pipelines("kafka", "otlp_http")}})
    spans = send_every_signal("grpc", edge.grpc_port, edge.http_port)
    try:
        wait_until(lambda: all_delivered(upstream), timeout=30, interval=0.25,
                   message="every item upstream through edgeagent, Kafka and otelcol")
    except AssertionError:
        raise AssertionError(collector.log()) from None
    assert_exactly_once(upstream, spans, "grpc")
    for items in ("spans", "metric_points", "log_records"):
        assert collector.metric(f"otelcol_kafka_receiver_unmarshal_failed_{items}") == 0
