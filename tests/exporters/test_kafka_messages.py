"""What the kafka exporter writes: otelcol's message values, keys and partitions, without a broker."""

from __future__ import annotations

import json
import struct

import pytest
import xxhash
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from edgeagent.exporters.kafka import (
    KafkaExporter,
    KafkaExporterConfig,
    fnv1a_32,
    map_hash,
    sarama_partition,
    trace_key,
)
from edgeagent.receivers import codec
from edgeagent.signals import Signal


def _traces(traces: int = 3, spans: int = 4) -> ExportTraceServiceRequest:
    """`traces` traces of `spans` spans each, spread over two resources and two scopes."""
    request = ExportTraceServiceRequest()
    for r in range(2):
        resource_spans = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
        resource_spans.resource.attributes.add(key="service.name").value.string_value = f"svc-{r}"
        for s in range(2):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = f"scope-{s}"
            for t in range(traces):
                for n in range(spans // 4):
                    span = scope_spans.spans.add(name=f"t{t}-r{r}-s{s}-{n}", kind=2)
                    span.trace_id = bytes([t + 1]) * 16
                    span.span_id = struct.pack(">Q", (t << 16) | (r << 8) | (s << 4) | n | 1)
    return request


def _exporter(**settings) -> KafkaExporter:
    return KafkaExporter("kafka", KafkaExporterConfig(**settings))


def test_otlp_proto_value_is_the_queued_request_unchanged():
    body = _traces().SerializeToString()
    assert _exporter().messages(Signal.TRACES, body) == [("otlp_spans", None, body)]


def test_partition_traces_by_id_writes_one_message_per_trace_keyed_by_its_hex_id():
    request = _traces(traces=3, spans=4)
    messages = _exporter(partition_traces_by_id=True).messages(Signal.TRACES, request.SerializeToString())
    assert sorted(key for _, key, _ in messages) == [(bytes([t]) * 16).hex().encode() for t in (1, 2, 3)]
    for topic, key, value in messages:
        assert topic == "otlp_spans"
        part = ExportTraceServiceRequest.FromString(value)
        spans = [span for rs in part.resource_spans for ss in rs.scope_spans for span in ss.spans]
        assert len(spans) == 4 and {span.trace_id.hex().encode() for span in spans} == {key}
        # resources and scopes keep their identity and schema URLs
        assert [rs.resource.attributes[0].value.string_value for rs in part.resource_spans] == ["svc-0", "svc-1"]
        assert all(rs.schema_url for rs in part.resource_spans)
        assert [[ss.scope.name for ss in rs.scope_spans] for rs in part.resource_spans] == [["scope-0", "scope-1"]] * 2


def test_trace_key_of_an_empty_trace_id_is_empty_as_in_otelcol():
    assert trace_key(bytes(16)) == b""
    assert trace_key(bytes.fromhex("0af7651916cd43dd8448eb211c80319c")) == b"0af7651916cd43dd8448eb211c80319c"


def test_otlp_json_is_the_otlp_json_mapping_that_the_receiver_codec_reads_back():
    request = _traces()
    [(_, _, value)] = _exporter(encoding="otlp_json").messages(Signal.TRACES, request.SerializeToString())
    document = json.loads(value)
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == (b"\x01" * 16).hex() and span["kind"] == 2  # hex ids, integer enums
    assert b" " not in value  # compact, as otelcol writes it
    assert codec.decode(Signal.TRACES, value, codec.JSON).view() == request


def test_metrics_and_logs_by_resource_attributes_key_each_resource_by_its_map_hash():
    metrics = ExportMetricsServiceRequest()
    for host in ("a", "b"):
        resource_metrics = metrics.resource_metrics.add()
        resource_metrics.resource.attributes.add(key="host.name").value.string_value = host
        resource_metrics.scope_metrics.add().metrics.add(name="up").gauge.data_points.add(as_int=1)
    messages = _exporter(partition_metrics_by_resource_attributes=True).messages(
        Signal.METRICS, metrics.SerializeToString())
    assert [key for _, key, _ in messages] == [map_hash(rm.resource.attributes) for rm in metrics.resource_metrics]
    assert [ExportMetricsServiceRequest.FromString(v).resource_metrics[0] for _, _, v in messages] == \
        list(metrics.resource_metrics)

    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "no attributes"
    [(topic, key, _)] = _exporter(partition_logs_by_resource_attributes=True).messages(
        Signal.LOGS, logs.SerializeToString())
    assert (topic, key) == ("otlp_logs", bytes(16))  # MapHash of an empty map


def test_map_hash_is_xxhash64_of_otelcols_typed_sorted_length_prefixed_encoding_twice():
    resource = ExportLogsServiceRequest().resource_logs.add().resource
    resource.attributes.add(key="n").value.int_value = 1
    resource.attributes.add(key="a").value.string_value = "b"
    nested = resource.attributes.add(key="m").value.kvlist_value.values.add(key="on")
    nested.value.bool_value = True
    # keys and strings carry their length (a varint), as xhash.MapHash writes them
    encoded = b"\xf4\x01a\xf7\x01b" + b"\xf4\x01m\xfc\xf4\x02on\xf8\xfd" + b"\xf4\x01n\xfa" + struct.pack("<q", 1)
    expected = struct.pack("<QQ", xxhash.xxh64_intdigest(encoded), xxhash.xxh64_intdigest(encoded + b"\xf3"))
    assert map_hash(resource.attributes) == expected


def test_keys_pick_saramas_partition_fnv1a_as_signed_int32():
    assert (fnv1a_32(b""), fnv1a_32(b"a"), fnv1a_32(b"foobar")) == (0x811C9DC5, 0xE40C292C, 0xBF9CF968)
    for key in (b"a", b"foobar", b"0af7651916cd43dd8448eb211c80319c", b""):
        signed = struct.unpack("<i", struct.pack("<I", fnv1a_32(key)))[0]
        assert sarama_partition(key, list(range(7)), []) == abs(signed) % 7
    assert sarama_partition(None, [0, 1, 2], [1]) == 1  # no key: one of the available partitions


def test_topic_from_attribute_sends_each_resource_to_the_topic_it_names():
    # as otelcol 0.165: a batch merges the requests of many clients, and the first resource's topic
    # sent every other tenant's data to it (a resource without the attribute goes to the signal's topic)
    request = _traces()
    request.resource_spans[1].resource.attributes.add(key="kafka.topic").value.string_value = "tenant-b"
    messages = _exporter(topic_from_attribute="kafka.topic").messages(Signal.TRACES, request.SerializeToString())
    assert [(topic, key) for topic, key, _ in messages] == [("otlp_spans", None), ("tenant-b", None)]
    for (_, _, value), resource_spans in zip(messages, request.resource_spans, strict=True):
        assert list(ExportTraceServiceRequest.FromString(value).resource_spans) == [resource_spans]
    request.resource_spans[0].resource.attributes.add(key="kafka.topic").value.string_value = "tenant-b"
    [(topic, _, value)] = _exporter(topic_from_attribute="kafka.topic").messages(
        Signal.TRACES, request.SerializeToString())
    assert topic == "tenant-b" and value == request.SerializeToString()  # one topic: the request as queued
    [(topic, _, _)] = _exporter(topic_from_attribute="kafka.topic", traces={"topic": "spans"}).messages(
        Signal.TRACES, _traces().SerializeToString())
    assert topic == "spans"


def test_partition_logs_by_trace_id_writes_one_message_per_trace_and_one_unkeyed_for_records_without():
    request = ExportLogsServiceRequest()
    scope_logs = request.resource_logs.add().scope_logs.add()
    for index, trace in enumerate((1, 2, 1, 0)):
        scope_logs.log_records.add(trace_id=bytes([trace]) * 16 if trace else b"").body.string_value = f"r{index}"
    messages = _exporter(partition_logs_by_trace_id=True).messages(Signal.LOGS, request.SerializeToString())
    by_key = {key: [record.body.string_value for rl in ExportLogsServiceRequest.FromString(value).resource_logs
                    for sl in rl.scope_logs for record in sl.log_records] for _, key, value in messages}
    assert by_key == {(bytes([1]) * 16).hex().encode(): ["r0", "r2"], (bytes([2]) * 16).hex().encode(): ["r1"],
                      None: ["r3"]}


def test_partition_logs_by_trace_id_and_by_resource_attributes_are_exclusive():
    with pytest.raises(ValidationError, match="mutually exclusive"):
        KafkaExporterConfig(partition_logs_by_trace_id=True, partition_logs_by_resource_attributes=True)


def test_record_partitioner_picks_the_partitioner():
    from aiokafka.partitioner import murmur2
    key = b"0af7651916cd43dd8448eb211c80319c"
    default = KafkaExporterConfig().record_partitioner.partitioner()
    assert default(key, list(range(8)), list(range(8))) == sarama_partition(key, list(range(8)), [])
    murmur = KafkaExporterConfig(record_partitioner={"sticky_key": {"hasher": "murmur2"}}).record_partitioner
    assert murmur.partitioner()(key, list(range(8)), []) == (murmur2(key) & 0x7FFFFFFF) % 8
    turns = KafkaExporterConfig(record_partitioner={"round_robin": None}).record_partitioner.partitioner()
    assert [turns(key, [0, 1, 2], [0, 1, 2]) for _ in range(6)] == [1, 2, 0, 1, 2, 0]  # the key is ignored


@pytest.mark.parametrize("partitioner, message", [
    ({"sticky_key": {}, "round_robin": {}}, "only one of"),
    ({"sticky_key": {"hasher": "fnv"}}, "sarama_compat"),
])
def test_a_record_partitioner_otelcol_refuses_is_refused(partitioner, message):
    with pytest.raises(ValidationError, match=message):
        KafkaExporterConfig(record_partitioner=partitioner)
