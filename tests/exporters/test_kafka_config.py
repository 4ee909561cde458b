"""The kafka exporter's config: otelcol's keys and defaults, and each mistake at its YAML path."""

from __future__ import annotations

import pytest

from edgeagent.exporters.kafka import KafkaExporterConfig
from edgeagent.signals import Signal
from tests.helpers.kafka import assert_config_errors, load_testdata


def test_defaults_are_otelcols_except_required_acks_all():
    config = KafkaExporterConfig()
    assert config.brokers == ["localhost:9092"]
    assert config.client_id == "otel-collector"
    assert [config.topic_for(signal) for signal in Signal] == ["otlp_spans", "otlp_metrics", "otlp_logs"]
    assert {config.encoding_for(signal) for signal in Signal} == {"otlp_proto"}
    assert config.timeout == 5.0
    assert (config.producer.max_message_bytes, config.producer.required_acks, config.producer.compression,
            config.producer.flush_max_messages) == (1_000_000, -1, "none", 0)
    assert not (config.partition_traces_by_id or config.partition_metrics_by_resource_attributes
                or config.partition_logs_by_resource_attributes)


def test_every_key_is_read_and_signal_settings_win_over_the_deprecated_top_level_ones():
    loaded = load_testdata("good-exporter-every-key.yaml")
    config: KafkaExporterConfig = loaded.exporters["kafka"].config
    assert config.brokers == ["kafka-0.kafka:9092", "kafka-1.kafka:9092"]
    assert (config.topic_for(Signal.TRACES), config.encoding_for(Signal.TRACES)) == ("edge_spans", "otlp_proto")
    assert (config.topic_for(Signal.METRICS), config.encoding_for(Signal.METRICS)) == ("edge_metrics", "otlp_json")
    assert (config.topic_for(Signal.LOGS), config.encoding_for(Signal.LOGS)) == ("telemetry", "otlp_json")
    assert config.producer.required_acks == -1  # "all"
    assert config.producer.compression == "zstd"
    assert config.auth.sasl_settings() == ("SCRAM-SHA-512", "edge", "not-a-secret")
    assert config.timeout == 10.0
    assert all(config.keyed(signal) for signal in Signal)
    assert any("protocol_version" in warning and "no effect" in warning for warning in loaded.warnings)


def test_plain_text_is_sasl_plain():
    config = KafkaExporterConfig(auth={"plain_text": {"username": "u", "password": "p"}})
    assert config.auth.sasl_settings() == ("PLAIN", "u", "p")


@pytest.mark.parametrize("acks,expected", [("all", -1), (-1, -1), (0, 0), (1, 1)])
def test_required_acks_accepts_all_and_the_numbers(acks, expected):
    assert KafkaExporterConfig(producer={"required_acks": acks}).producer.required_acks == expected


def test_every_mistake_is_reported_at_its_path():
    assert_config_errors("bad-exporter.yaml", {
        "exporters::kafka::brokers": ["at least one broker"],
        "exporters::kafka::protocol_version": ["two"],
        "exporters::kafka::encoding": ["jaeger_proto", "otlp_json"],
        "exporters::kafka::producer::compression": ["zstd"],
        "exporters::kafka::producer::required_acks": ["-1"],
        "exporters::kafka::auth::sasl::mechanism": ["SCRAM-SHA-512"],
        "exporters::kafka/headers": ["headers"],
        "exporters::kafka/topics::topic": ["spans of plant 7", "topic name"],
        "exporters::kafka/topics::logs::topic": ["topic name"],
        "exporters::kafka/kerberos::auth::kerberos": ["kerberos"],
    })


def test_sasl_without_password_and_both_auth_forms_are_refused():
    with pytest.raises(ValueError, match="password is required"):
        KafkaExporterConfig(auth={"sasl": {"mechanism": "PLAIN", "username": "u"}})
    with pytest.raises(ValueError, match="not both"):
        KafkaExporterConfig(auth={"sasl": {"mechanism": "PLAIN", "username": "u", "password": "p"},
                                  "plain_text": {"username": "u", "password": "p"}})


def test_tls_settings_the_client_cannot_honour_are_refused_not_ignored():
    with pytest.raises(ValueError, match="reload_interval"):
        KafkaExporterConfig(tls={"reload_interval": "1m"})
    with pytest.raises(ValueError, match="server_name_override"):
        KafkaExporterConfig(auth={"tls": {"server_name_override": "kafka"}})
