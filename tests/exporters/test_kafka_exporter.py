"""The kafka exporter against a real broker (tansu on loopback): acknowledged sends, codecs, errors."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.errors import PermanentError, RetryableError
from edgeagent.exporters.kafka import KafkaExporter, KafkaExporterConfig
from edgeagent.signals import Signal
from tests.helpers.net import free_port


def _body(spans: int, name_bytes: int = 16) -> bytes:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        span = scope_spans.spans.add(name=f"{index:0{name_bytes}d}")
        span.trace_id = index.to_bytes(16, "big")
        span.span_id = (index + 1).to_bytes(8, "big")
    return request.SerializeToString()


def _send(config: KafkaExporterConfig, *bodies: bytes) -> None:
    async def scenario() -> None:
        exporter = KafkaExporter("kafka", config)
        await exporter.start()
        try:
            for body in bodies:
                await exporter.send(Signal.TRACES, body)
        finally:
            await exporter.shutdown()

    asyncio.run(scenario())


@pytest.mark.parametrize("compression", ["gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec_arrives_intact(kafka, compression):
    kafka.create_topic("otlp_spans", 1)
    body = _body(200)
    _send(KafkaExporterConfig(brokers=[kafka.bootstrap], producer={"compression": compression}), body)
    [record] = kafka.records("otlp_spans", expected=1)
    assert record.value == body and record.key is None


def test_flush_max_messages_still_sends_every_keyed_message(kafka):
    kafka.create_topic("otlp_spans", 3)
    config = KafkaExporterConfig(brokers=[kafka.bootstrap], partition_traces_by_id=True,
                                 producer={"flush_max_messages": 7})
    _send(config, _body(50))
    records = kafka.records("otlp_spans", expected=50)
    expected = [b""] + [index.to_bytes(16, "big").hex().encode() for index in range(1, 50)]  # trace 0: no key
    assert sorted(record.key for record in records) == sorted(expected)


def test_a_message_over_max_message_bytes_is_permanent_with_413_so_the_sender_splits(kafka):
    config = KafkaExporterConfig(brokers=[kafka.bootstrap], producer={"max_message_bytes": 2000})
    with pytest.raises(PermanentError) as caught:
        _send(config, _body(200))
    assert caught.value.status == 413


def test_unreachable_brokers_are_a_retryable_connection_failure():
    config = KafkaExporterConfig(brokers=[f"127.0.0.1:{free_port()}"], timeout="1s")
    with pytest.raises(RetryableError) as caught:
        _send(config, _body(1))
    assert caught.value.connection
    assert caught.value.unanswered  # no broker accepted a connection: the exporter may watch for one
    assert KafkaExporter("kafka", config, None).upstream_addresses() == [("127.0.0.1", int(config.brokers[0][10:]))]
