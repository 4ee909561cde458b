"""The kafka receiver's config: otelcol's keys and defaults, what edgeagent refuses and why, at YAML paths."""

from __future__ import annotations

import pytest

from edgeagent.receivers.kafka import KafkaReceiverConfig
from edgeagent.signals import Signal
from tests.helpers.kafka import assert_config_errors, load_testdata


def test_defaults_are_otelcols():
    config = KafkaReceiverConfig()
    assert config.brokers == ["localhost:9092"]
    assert (config.group_id, config.client_id, config.initial_offset) == ("otel-collector", "otel-collector", "latest")
    assert [config.topics_for(signal) for signal in Signal] == [["otlp_spans"], ["otlp_metrics"], ["otlp_logs"]]
    assert (config.autocommit.enable, config.autocommit.interval) == (True, 1.0)
    assert (config.session_timeout, config.heartbeat_interval) == (10.0, 3.0)
    assert (config.min_fetch_size, config.max_fetch_size, config.max_fetch_wait, config.max_partition_fetch_size) == \
        (1, 0, 0.25, 1048576)
    assert config.group_rebalance_strategy == "range"
    assert config.max_decompress_batch_bytes == 1 << 30  # 1 GiB


def test_every_key_is_read_into_the_consumer_options():
    loaded = load_testdata("good-receiver-every-key.yaml")
    config: KafkaReceiverConfig = loaded.receivers["kafka"].config
    assert config.topics_for(Signal.TRACES) == ["edge_spans", "more_spans"]
    assert config.topics_for(Signal.LOGS) == ["edge_logs"]
    assert config.topics_for(Signal.METRICS) == ["telemetry"]  # the deprecated top-level topic
    assert (config.encoding_for(Signal.TRACES), config.encoding_for(Signal.LOGS)) == ("otlp_json", "otlp_proto")
    options = config.consumer_options()
    assert options["group_id"] == "hub" and options["client_id"] == "hub-1"
    assert options["auto_offset_reset"] == "earliest"
    assert options["enable_auto_commit"] is False  # edgeagent commits only durable offsets itself
    assert (options["session_timeout_ms"], options["heartbeat_interval_ms"]) == (30000, 5000)
    assert (options["fetch_min_bytes"], options["fetch_max_bytes"], options["fetch_max_wait_ms"],
            options["max_partition_fetch_bytes"]) == (1024, 52428800, 500, 2097152)
    assert options["partition_assignment_strategy"][0].name == "sticky"
    assert (options["security_protocol"], options["sasl_mechanism"], options["sasl_plain_username"]) == \
        ("SASL_PLAINTEXT", "PLAIN", "hub")
    assert config.header_extraction.headers == ["tenant"]
    assert config.error_backoff.initial_interval == 0.5
    assert config.max_decompress_batch_bytes == 256 << 20


def test_every_mistake_is_reported_at_its_path_with_the_reason():
    assert_config_errors("bad-receiver.yaml", {
        "receivers::kafka::traces::encoding": ["zipkin_json"],
        "receivers::kafka::initial_offset": ["earliest"],
        "receivers::kafka::autocommit::interval": ["duration"],
        "receivers::kafka/marking::message_marking": ["durable"],
        "receivers::kafka/backoff::error_backoff": ["never skips"],
        "receivers::kafka/regex": ["regular expression"],
        "receivers::kafka/both::metrics": ["topic", "topics", "both"],
        "receivers::kafka/heartbeat": ["heartbeat_interval"],
        "receivers::kafka/tls::tls": ["server_name_override"],
        "receivers::kafka/decompress::max_decompress_batch_bytes": ["1", "2147483647"],
    })


@pytest.mark.parametrize("value", [-100, 0, 1 << 31])
def test_max_decompress_batch_bytes_outside_otelcols_range_is_refused(value):
    with pytest.raises(ValueError, match="between 1 and 2147483647"):
        KafkaReceiverConfig(max_decompress_batch_bytes=value)
    assert KafkaReceiverConfig(max_decompress_batch_bytes=(1 << 31) - 1).max_decompress_batch_bytes == (1 << 31) - 1


def test_error_backoff_max_elapsed_time_is_refused():
    with pytest.raises(ValueError, match="max_elapsed_time"):
        KafkaReceiverConfig(error_backoff={"max_elapsed_time": "1m"})
    assert KafkaReceiverConfig(error_backoff={"enabled": True, "max_elapsed_time": "0s"}).error_backoff


def test_tls_block_means_tls_and_insecure_means_plaintext(certs):
    assert KafkaReceiverConfig(tls={"ca_file": certs.ca_file}).client_options()["security_protocol"] == "SSL"
    assert KafkaReceiverConfig(tls={"insecure": True}).client_options()["security_protocol"] == "PLAINTEXT"
    # with a CA, configtls's LoadTLSConfig keeps the block whatever `insecure` says, and franz-go dials TLS
    both = KafkaReceiverConfig(tls={"insecure": True, "ca_file": certs.ca_file})
    assert both.client_options()["security_protocol"] == "SSL"
    sasl = KafkaReceiverConfig(tls={"ca_file": certs.ca_file},
                               auth={"sasl": {"mechanism": "SCRAM-SHA-256", "username": "u", "password": "p"}})
    assert sasl.client_options()["security_protocol"] == "SASL_SSL"


def test_otelcols_default_rebalance_strategy_is_refused_saying_why():
    """cooperative-sticky is otelcol's default: a config that names it is told what aiokafka lacks."""
    with pytest.raises(ValueError, match="no cooperative rebalancing"):
        KafkaReceiverConfig(group_rebalance_strategy="cooperative-sticky")


def test_message_marking_that_says_what_edgeagent_does_is_accepted():
    """A refused message is retried until it is durable and an undecodable one is skipped: otelcol's
    `after: true, on_permanent_error: true`, whatever `on_error` says (it only decides once retries
    stop, and edgeagent's never stop)."""
    for on_error in (True, False):
        marking = KafkaReceiverConfig(message_marking={"after": True, "on_error": on_error,
                                                       "on_permanent_error": True}).message_marking
        assert (marking.after, marking.on_error, marking.on_permanent_error) == (True, on_error, True)


def test_on_permanent_error_unset_is_on_error_as_in_otelcol():
    # otelcol's Unmarshal: on_permanent_error, unset, takes on_error's value; false would block the partition
    with pytest.raises(ValueError, match="on_permanent_error.*on_error"):
        KafkaReceiverConfig(message_marking={"after": True, "on_error": False})
    assert KafkaReceiverConfig(message_marking={"after": True, "on_error": True}).message_marking.on_permanent_error


def test_min_fetch_size_zero_is_accepted_and_fetches_wait_for_a_byte():
    # otelcol takes 0; a fetch asking for no byte comes back empty at once, so it asks for one, which
    # returns as soon as any record is there all the same
    assert KafkaReceiverConfig(min_fetch_size=0).consumer_options()["fetch_min_bytes"] == 1
