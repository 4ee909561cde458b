"""otelcol's configkafka client keys as the Kafka client (aiokafka) takes them: conn_idle_timeout,
metadata (refresh_interval, retry::backoff, full), rack_id, group_instance_id, producer::linger.
The options are checked on a real consumer built from them (the e2e Kafka tests send through a
broker with them)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from edgeagent.exporters.kafka import KafkaExporterConfig
from edgeagent.receivers.kafka import KafkaReceiverConfig
from edgeagent.signals import Signal


def test_client_keys_reach_the_consumer():
    config = KafkaReceiverConfig(conn_idle_timeout="2m", rack_id="eu-west-1a", group_instance_id="edge-7",
                                 metadata={"refresh_interval": "1m", "retry": {"backoff": "500ms"}})

    async def build() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(**config.consumer_options())

    consumer = asyncio.run(build())
    client = consumer._client
    assert (client._connections_max_idle_ms, client._metadata_max_age_ms, client._retry_backoff) == (
        120_000, 60_000, 0.5)
    assert (consumer._client_rack, consumer._group_instance_id) == ("eu-west-1a", "edge-7")


def test_defaults_are_otelcols():
    options = KafkaReceiverConfig().consumer_options()
    assert (options["connections_max_idle_ms"], options["metadata_max_age_ms"], options["retry_backoff_ms"]) == (
        540_000, 600_000, 250)
    assert "client_rack" not in options and "group_instance_id" not in options


def test_zero_metadata_durations_keep_the_defaults_as_otelcol():
    options = KafkaReceiverConfig(metadata={"refresh_interval": "0s", "retry": {"backoff": "0s"}}).client_options()
    assert (options["metadata_max_age_ms"], options["retry_backoff_ms"]) == (600_000, 250)


def test_rack_id_and_metadata_full_are_said_to_do_nothing_on_a_producer():
    config = KafkaExporterConfig(producer={"linger": "20ms"}, rack_id="eu-west-1a", metadata={"full": False})
    assert config.producer.linger == 0.02
    warnings = config.config_warnings()
    assert any("rack_id has no effect on a producer" in warning for warning in warnings)
    assert any("metadata::full has no effect" in warning for warning in warnings)
    assert not KafkaExporterConfig().config_warnings()


def test_group_rebalance_strategies_are_offered_in_order():
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
    options = KafkaReceiverConfig(group_rebalance_strategies=["sticky", "range"]).consumer_options()
    assert options["partition_assignment_strategy"] == (StickyPartitionAssignor, RangePartitionAssignor)
    assert KafkaReceiverConfig().consumer_options()["partition_assignment_strategy"] == (RangePartitionAssignor,)


@pytest.mark.parametrize("keys, message", [
    ({"group_rebalance_strategies": ["cooperative-sticky"]}, "no cooperative rebalancing"),
    ({"group_rebalance_strategies": ["my_balancer"]}, "no balancer extensions"),
    ({"group_rebalance_strategies": ["range"], "group_rebalance_strategy": "range"}, "mutually exclusive"),
])
def test_rebalance_strategies_the_client_lacks_are_refused(keys, message):
    with pytest.raises(ValidationError, match=message):
        KafkaReceiverConfig(**keys)


def test_signal_header_name_is_reserved_in_record_headers():
    with pytest.raises(ValidationError, match="reserved when signal_header is enabled"):
        KafkaExporterConfig(signal_header=True, record_headers=[{"name": "otelcol.signal", "value": "x"}])
    config = KafkaExporterConfig(record_headers=[{"name": "otelcol.signal", "value": "x"}])
    assert config.record_headers_for(Signal.LOGS) == [("otelcol.signal", b"x")]


def test_allow_auto_topic_creation_true_is_what_the_client_does_and_false_is_refused():
    assert KafkaExporterConfig(producer={"allow_auto_topic_creation": True}).producer.allow_auto_topic_creation
    with pytest.raises(ValidationError, match="allow_auto_topic_creation: false is not supported"):
        KafkaExporterConfig(producer={"allow_auto_topic_creation": False})
