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


def test_timeout_zero_is_no_timeout_and_messages_are_acknowledged(kafka):
    """otelcol's `timeout: 0`: no deadline on the attempt (before, the producer was started with a
    request timeout of 0 ms and every attempt timed out at once)."""
    kafka.create_topic("otlp_spans", 1)
    body = _body(20)
    _send(KafkaExporterConfig(brokers=[kafka.bootstrap], timeout=0), body)
    [record] = kafka.records("otlp_spans", expected=1)
    assert record.value == body


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


@pytest.mark.e2e  # starts a broker, and waits for the cap
def test_a_wait_for_the_bandwidth_cap_is_not_a_broker_that_did_not_answer(kafka):
    """Requests queued behind `rate_limit` wait for their turn before the attempt's timeout starts:
    a broker acknowledging at once is never "did not answer", never offline, and gets each request once."""
    from edgeagent.configretry import RetryConfig
    from edgeagent.exporters.chain import ExportChain
    from edgeagent.exporters.link import Link
    from tests.exporters.test_chain import Host

    kafka.create_topic("otlp_spans", 1)
    config = KafkaExporterConfig(brokers=[kafka.bootstrap], timeout="0.2s",
                                 rate_limit={"bytes_per_second": 10_000})
    exporter = KafkaExporter("kafka", config)
    retry = RetryConfig(initial_interval=0.2, max_interval=0.2, max_elapsed_time=0)
    states: list[bool] = []
    host = Host()
    body = _body(120, name_bytes=8)  # about 5 KB: the third waits 0.5 s for the cap, over the attempt's timeout
    assert 4000 < len(body) < 6000

    async def scenario() -> None:
        await exporter.start()
        link = Link(4, retry, states.append, exporter.upstream_addresses(), "kafka")
        chain = ExportChain(exporter, Signal.TRACES, host, timeout=0.2, retry=retry, link=link, drains_queue=True)
        try:
            await exporter.send(Signal.TRACES, _body(1))  # connected: the timed attempts only produce
            await asyncio.wait_for(asyncio.gather(*(chain.export([(body, 120)]) for _ in range(3))), 15)
        finally:
            chain.stop()
            link.close()
            await exporter.shutdown()

    asyncio.run(scenario())
    assert host.counts[("otelcol_exporter_sent_spans", "kafka")] == 360
    assert [record.value for record in kafka.all_records("otlp_spans")].count(body) == 3
    assert False not in states
    assert not [problem for problem in host.problems_seen if "did not answer" in problem]


def test_a_topic_from_an_attribute_that_is_no_topic_name_is_refused_for_good_not_retried_forever(kafka):
    """The broker never answers for a topic it cannot have: retried, such a request would hold its
    consumer (and, timing out, take the exporter offline) for good. It is refused: dead-lettered."""
    request = ExportTraceServiceRequest.FromString(_body(1))
    request.resource_spans[0].resource.attributes.add(key="tenant").value.string_value = "plant 7!"
    config = KafkaExporterConfig(brokers=[kafka.bootstrap], timeout="1s", topic_from_attribute="tenant")
    with pytest.raises(PermanentError) as caught:
        _send(config, request.SerializeToString())
    assert "plant 7!" in str(caught.value) and "topic" in str(caught.value)


@pytest.mark.e2e  # starts a broker and produces 2000 messages one at a time
def test_a_request_acknowledged_in_parts_over_several_attempts_is_delivered_once(kafka):
    """2000 traces, one message each, acknowledged one at a time (flush_max_messages: 1), take longer
    than one attempt's timeout: each attempt sends only what earlier ones did not get acknowledged,
    so the request gets through. Before, each attempt began again from the first message: never
    delivered, and Kafka filled with copies of the first few hundred traces."""
    from edgeagent.configretry import RetryConfig
    from edgeagent.exporters.chain import ExportChain
    from tests.exporters.test_chain import Host

    kafka.create_topic("otlp_spans", 2)
    config = KafkaExporterConfig(brokers=[kafka.bootstrap], timeout="0.2s", partition_traces_by_id=True,
                                 producer={"flush_max_messages": 1})
    exporter = KafkaExporter("kafka", config)
    retry = RetryConfig(initial_interval=0.05, max_interval=0.05, max_elapsed_time=0)
    body = _body(2000)

    async def scenario() -> None:
        await exporter.start()
        chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=0.2, retry=retry)
        try:
            await exporter.send(Signal.TRACES, _body(1))  # connected: the timed attempts only produce
            await asyncio.wait_for(chain.export([(body, 2000)]), 10)
        finally:
            chain.stop()
            await exporter.shutdown()

    asyncio.run(scenario())
    keys = [record.key for record in kafka.all_records("otlp_spans")]
    assert set(keys) == {b""} | {index.to_bytes(16, "big").hex().encode() for index in range(1, 2000)}
    assert len(keys) <= 2001 + 20  # at most the message in flight when an attempt timed out, again
