"""otelcol's kafka exporter and edgeagent's, writing the same requests to the same topics: each
message of a trace or a resource gets the same key from both and lands on the same partition, so a
fleet mixing the two keeps a trace (or a resource's series) on one partition, hence one hub.

otelcol-contrib 0.165.0 and edgeagent both receive the requests over OTLP/HTTP and write to one tansu
broker; a record header tells whose record is whose.
"""

from __future__ import annotations

import collections
import urllib.request

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.exporters.kafka import map_hash, sarama_partition
from tests.helpers.net import wait_until
from tests.interop.peers import OtelcolPorts, agent_config

pytestmark = pytest.mark.e2e

PARTITIONS = 7
TOPICS = {"traces": "otlp_spans", "metrics": "otlp_metrics", "logs": "otlp_logs"}
KEYED: dict[str, object] = {"partition_traces_by_id": True, "partition_metrics_by_resource_attributes": True,
         "partition_logs_by_resource_attributes": True}


def _attributes(resource, index: int) -> None:
    """Attributes of every type, with keys and values of several lengths."""
    attributes = resource.attributes
    attributes.add(key="service.name").value.string_value = f"checkout-{index}"
    attributes.add(key="k8s.pod.uid").value.string_value = "a" * (index * 40)  # past one varint byte at 4
    attributes.add(key="host.cpu").value.int_value = -index
    attributes.add(key="ratio").value.double_value = index / 3
    attributes.add(key="on").value.bool_value = index % 2 == 0
    attributes.add(key="raw").value.bytes_value = bytes(range(index))
    attributes.add(key="tags").value.array_value.values.add().string_value = f"t{index}"
    attributes.add(key="nested").value.kvlist_value.values.add(key=f"n{index}").value.int_value = index


def _requests() -> dict[str, bytes]:
    traces = ExportTraceServiceRequest()
    for index in range(3):
        spans = traces.resource_spans.add()
        _attributes(spans.resource, index)
        scope = spans.scope_spans.add()
        for trace in range(10):
            span = scope.spans.add(name="op", trace_id=bytes([index + 1, trace + 1]) * 8,
                                   span_id=bytes([index + 1, trace + 1]) * 4)
            span.start_time_unix_nano = span.end_time_unix_nano = 1_700_000_000_000_000_000
    metrics = ExportMetricsServiceRequest()
    logs = ExportLogsServiceRequest()
    for index in range(6):
        resource_metrics = metrics.resource_metrics.add()
        _attributes(resource_metrics.resource, index)
        metric = resource_metrics.scope_metrics.add().metrics.add(name="requests")
        metric.gauge.data_points.add(as_int=index, time_unix_nano=1_700_000_000_000_000_000)
        resource_logs = logs.resource_logs.add()
        _attributes(resource_logs.resource, index)
        resource_logs.scope_logs.add().log_records.add(time_unix_nano=1_700_000_000_000_000_000).body.string_value = "x"
    return {"traces": traces.SerializeToString(), "metrics": metrics.SerializeToString(),
            "logs": logs.SerializeToString()}


def _post(port: int, signal: str, body: bytes) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/{signal}", data=body, method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _by_writer(records) -> dict[str, dict[bytes, set[int]]]:
    """writer -> message key -> the partitions its messages went to."""
    out: dict[str, dict[bytes, set[int]]] = collections.defaultdict(lambda: collections.defaultdict(set))
    for record in records:
        writer = dict(record.headers)["writer"].decode()
        out[writer][record.key].add(record.partition)
    return out


@pytest.mark.parametrize("hasher", ["sarama_compat", "murmur2"])
def test_otelcol_and_edgeagent_key_and_partition_every_message_alike(agents, otelcol, kafka, tmp_path, hasher):
    for topic in TOPICS.values():
        kafka.create_topic(topic, PARTITIONS)
    keyed = {**KEYED, "record_partitioner": {"sticky_key": {"hasher": hasher}}}
    ports = OtelcolPorts()
    # tansu closes the connection on franz-go's newest ApiVersions request: a pinned version avoids it
    collector = otelcol(ports.config("kafka", {"brokers": [kafka.bootstrap], **keyed, "protocol_version": "2.1.0",
                                   "record_headers": [{"name": "writer", "value": "otelcol"}]}))
    edge = agents(["run", "--config", agent_config(tmp_path / "edge.yaml", "kafka", {
        "brokers": [kafka.bootstrap], **keyed, "record_headers": [{"name": "writer", "value": "edgeagent"}]}),
        "--state-dir", str(tmp_path / "edge")])
    requests = _requests()
    for signal, body in requests.items():
        _post(ports.http, signal, body)
        _post(edge.http_port, signal, body)
    expected = {"traces": 30, "metrics": 6, "logs": 6}  # messages per writer: one per trace, one per resource

    found: dict[str, dict[str, dict[bytes, set[int]]]] = {}
    # every record any read found, by where it is: a read of tansu's memory storage now and then comes
    # back short of records an earlier read found, and a record at an offset never changes
    seen: dict[str, dict[tuple[int, int], object]] = {signal: {} for signal in TOPICS}

    def written() -> bool:
        """Each topic read once more until both writers' messages are all among the records read."""
        for signal, topic in TOPICS.items():
            seen[signal].update({(record.partition, record.offset): record for record in kafka.all_records(topic)})
            found[signal] = _by_writer(seen[signal].values())
        return all(len(found[signal].get(writer, {})) >= count
                   for signal, count in expected.items() for writer in ("otelcol", "edgeagent"))

    try:
        wait_until(written, timeout=30, interval=0.5, message="every keyed message from both writers")
    except AssertionError:
        counts = {signal: {writer: len(keys) for writer, keys in found[signal].items()} for signal in TOPICS}
        raise AssertionError(f"keys written: {counts}\n{collector.log()}") from None
    for signal in TOPICS:
        assert found[signal]["edgeagent"] == found[signal]["otelcol"], signal  # same keys, same partitions
        for key, partitions in found[signal]["otelcol"].items():
            if hasher == "sarama_compat":
                assert partitions == {sarama_partition(key, list(range(PARTITIONS)), [])}, (signal, key)
    metrics = ExportMetricsServiceRequest.FromString(requests["metrics"])
    assert set(found["metrics"]["otelcol"]) == \
        {map_hash(rm.resource.attributes) for rm in metrics.resource_metrics}
