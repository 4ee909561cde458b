"""Kafka in and out (hub tier): edge agents write to a real broker (tansu on loopback), hubs read from it.

Every test runs the real `edgeagent` processes: an edge agent (otlp receiver -> kafka exporter)
fed by the OpenTelemetry SDK, the broker, and one or two hub agents (kafka receiver -> otlphttp)
in front of the recording test upstream. rotel's kafka exporter stands in for another collector
whose messages a hub must read.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
import types

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from edgeagent.exporters.kafka import sarama_partition
from otel.wire import length_delimited
from tests.helpers.agent import AgentProcess
from tests.helpers.kafka import edge_config, hub_config, trace_requests, wait_for_spans
from tests.helpers.net import free_port, wait_until
from tests.helpers.rotel import Rotel, rotel_binary
from tests.helpers.sdk import _exporters, send_logs, send_metrics, send_spans

TOPICS = ("otlp_spans", "otlp_metrics", "otlp_logs")
needs_rotel = pytest.mark.skipif(rotel_binary() is None, reason="rotel-agent not found: install the `rotel` package")
QUICK_RETRY = {"initial_interval": "50ms", "max_interval": "200ms"}  # a refused message is offered again soon


def _topics(kafka, partitions: int = 4) -> None:
    for topic in TOPICS:
        kafka.create_topic(topic, partitions, exist_ok=True)


def _edge(agents, tmp_path, kafka, name: str = "edge", **exporter) -> AgentProcess:
    config = edge_config(tmp_path / f"{name}.yaml", kafka.bootstrap, **exporter)
    return agents(["run", "--config", config, "--state-dir", str(tmp_path / name)])


def _hub(agents, tmp_path, kafka, upstream, name: str = "hub", signals=("traces", "metrics", "logs"),
         exporter: dict | None = None, processors: dict | None = None, **receiver) -> AgentProcess:
    """A hub: the kafka receiver -> `processors` (traces) -> otlphttp with `exporter`'s settings -> upstream."""
    ports = AgentProcess(args=[])  # its free loopback ports, for the config and the fixture
    config = hub_config(tmp_path / f"{name}.yaml", kafka.bootstrap, upstream.url, ports, signals, **receiver)
    if exporter or processors:
        document = yaml.safe_load(open(config))
        document["exporters"]["otlphttp"].update(exporter or {})
        if processors:
            document["processors"] = processors
            document["service"]["pipelines"]["traces"]["processors"] = list(processors)
        open(config, "w").write(yaml.safe_dump(document))
    return agents(["run", "--config", config, "--state-dir", str(tmp_path / name)], ports=ports,
                  port_overrides=False)


def _lag(agent: AgentProcess, topic: str = "otlp_spans") -> dict[str, float]:
    """kafka_consumer_lag of `topic` by partition, as the agent's /metrics shows it now."""
    out = {}
    for key, value in agent.metrics().items():
        if key.startswith("kafka_consumer_lag{") and f'topic="{topic}"' in key:
            out[key.split('partition="')[1].split('"')[0]] = value
    return out


def _send_traces(port: int, traces: int, spans_per_trace: int) -> dict[bytes, set[bytes]]:
    """Traces of a root and children, all exported in one request; returns trace id -> span ids."""
    provider = TracerProvider(resource=Resource.create({"service.name": "kafka-e2e"}))
    provider.add_span_processor(BatchSpanProcessor(_exporters("traces", "grpc", port), max_queue_size=10_000,
                                                   max_export_batch_size=10_000, schedule_delay_millis=60_000))
    tracer = provider.get_tracer("edgeagent.tests.kafka")
    sent: dict[bytes, set[bytes]] = collections.defaultdict(set)
    for index in range(traces):
        with tracer.start_as_current_span(f"root-{index}") as root:
            for child in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"child-{child}") as span:
                    sent[span.get_span_context().trace_id.to_bytes(16, "big")].add(
                        span.get_span_context().span_id.to_bytes(8, "big"))
            sent[root.get_span_context().trace_id.to_bytes(16, "big")].add(
                root.get_span_context().span_id.to_bytes(8, "big"))
    assert provider.force_flush(60_000)
    provider.shutdown()
    return sent


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_every_signal_crosses_kafka_into_a_hub(agents, upstream, kafka, tmp_path, encoding):
    _topics(kafka)
    edge = _edge(agents, tmp_path, kafka, encoding=encoding)
    hub = _hub(agents, tmp_path, kafka, upstream, encoding=encoding)
    sent = send_spans("grpc", edge.grpc_port, 3000, service="via-kafka", batch=256, must_deliver=True)
    send_metrics("http", edge.http_port, points=5)
    send_logs("grpc", edge.grpc_port, count=20)

    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="every span upstream")
    wait_until(lambda: len(upstream.data_points()) >= 5 and len(upstream.log_records()) >= 20, timeout=30,
               message="every data point and log record upstream")
    assert upstream.span_ids() == sent
    assert {kv.value.string_value for r in upstream.received("traces") for rs in r.message.resource_spans
            for kv in rs.resource.attributes if kv.key == "service.name"} == {"via-kafka"}
    assert sorted(kv.value.string_value for point in upstream.data_points() for kv in point.attributes
                  if kv.key == "route") == [f"/r{index}" for index in range(5)]
    assert sorted(record.body.string_value for record in upstream.log_records()) == \
        sorted(f"record {index} over grpc" for index in range(20))
    assert edge.metric("otelcol_exporter_sent_spans", exporter="kafka") == 3000
    in_kafka = sum(kafka.span_ids().values())  # 3000, and more if a produce was retried after a stall
    wait_until(lambda: hub.metric("otelcol_receiver_accepted_spans", receiver="kafka", transport="kafka") == in_kafka,
               timeout=30, message=f"the hub accepting the {in_kafka} spans in Kafka")
    assert hub.terminate() == 0 and edge.terminate() == 0


def test_otelcols_client_keys_reach_a_real_broker_and_spans_still_cross(agents, upstream, kafka, tmp_path):
    # conn_idle_timeout, metadata, rack_id, producer::linger on the edge; group_instance_id (static
    # membership) and rack_id on the hub
    client = {"conn_idle_timeout": "2m", "metadata": {"refresh_interval": "1m", "retry": {"backoff": "100ms"}},
              "rack_id": "rack-a"}
    _topics(kafka)
    edge = _edge(agents, tmp_path, kafka, producer={"linger": "20ms"}, **client)
    hub = _hub(agents, tmp_path, kafka, upstream, group_instance_id="hub-0", **client)
    sent = send_spans("grpc", edge.grpc_port, 500, service="via-kafka", batch=100, must_deliver=True)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="every span upstream")
    assert hub.terminate() == 0 and edge.terminate() == 0


def test_record_headers_and_signal_header_are_on_every_record(agents, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 1)
    edge = _edge(agents, tmp_path, kafka, record_headers=[{"name": "site", "value": "plant-7"}], signal_header=True)
    sent = send_spans("grpc", edge.grpc_port, 50, batch=50, must_deliver=True)
    wait_for_spans(kafka, sent, edge, timeout=30)
    records = kafka.all_records("otlp_spans")
    assert records and all(list(record.headers) == [("site", b"plant-7"), ("otelcol.signal", b"traces")]
                           for record in records)
    assert edge.terminate() == 0


def test_record_partitioner_round_robin_spreads_the_messages_over_the_partitions(agents, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 3)
    edge = _edge(agents, tmp_path, kafka, record_partitioner={"round_robin": {}},
                 sending_queue={"num_consumers": 1})
    sent: set[bytes] = set()
    for _ in range(6):  # six requests, six messages
        sent |= send_spans("grpc", edge.grpc_port, 10, batch=10, must_deliver=True)
    wait_for_spans(kafka, sent, edge, timeout=30)
    partitions = [record.partition for record in kafka.all_records("otlp_spans")]
    assert set(partitions) == {0, 1, 2}, partitions  # (a produce retried after a stall may add a copy)
    assert edge.terminate() == 0


def test_partition_traces_by_id_puts_each_trace_in_one_message_on_one_partition(agents, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 4)
    edge = _edge(agents, tmp_path, kafka, partition_traces_by_id=True)
    sent = _send_traces(edge.grpc_port, traces=40, spans_per_trace=5)
    wait_for_spans(kafka, set().union(*sent.values()), edge, timeout=30)
    records = list({record.value: record for record in kafka.all_records("otlp_spans")}.values())

    assert len(records) == 40  # one message per trace (a produce retried after a stall is in Kafka twice)
    for record in records:
        request = ExportTraceServiceRequest.FromString(record.value)
        spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        (trace_id,) = {span.trace_id for span in spans}
        assert record.key == trace_id.hex().encode()
        assert {span.span_id for span in spans} == sent[trace_id]  # every span of the trace, in this message
        assert record.partition == sarama_partition(record.key, [0, 1, 2, 3], [])
    assert {ExportTraceServiceRequest.FromString(r.value).resource_spans[0].scope_spans[0].spans[0].trace_id
            for r in records} == set(sent)
    assert len({record.partition for record in records}) > 1  # keys spread the traces over the partitions


def test_data_stays_queued_while_the_broker_is_down_and_arrives_when_it_returns(agents, kafka, tmp_path):
    kafka.kill()
    edge = _edge(agents, tmp_path, kafka)
    sent = send_spans("http", edge.http_port, 1000, batch=100)  # accepted: durable in the edge's queue
    wait_until(lambda: 'edgeagent_upstream_online{exporter="kafka"}' in edge.metrics(), timeout=30,
               message="the exporter trying while the broker is down")
    assert edge.metric("edgeagent_upstream_online", exporter="kafka") == 0
    assert edge.metric("edgeagent_queue_items", exporter="kafka", data_type="traces") == 1000
    assert edge.metric("otelcol_exporter_sent_spans", exporter="kafka") == 0

    kafka.start()  # an empty broker on the same port
    kafka.create_topic("otlp_spans", 2, exist_ok=True)
    wait_until(lambda: edge.metric("edgeagent_queue_items", exporter="kafka", data_type="traces") == 0,
               timeout=60, interval=0.25, message="the edge's queue drained into Kafka")
    assert set(kafka.span_ids()) == sent
    assert edge.metric("otelcol_exporter_sent_spans", exporter="kafka") == 1000


def test_a_broker_stalled_past_the_timeout_gets_every_span_soon_after_it_answers_again(agents, kafka, tmp_path):
    # a broker frozen on a loaded host leaves produce requests unanswered past the exporter's timeout; the
    # edge retries them, and the broker may append the first copy too when it wakes up (at least once)
    kafka.create_topic("otlp_spans", 2)
    edge = _edge(agents, tmp_path, kafka, timeout="1s")
    first = send_spans("grpc", edge.grpc_port, 100, batch=100, must_deliver=True)
    wait_for_spans(kafka, first, edge, timeout=30)  # the producer is connected

    kafka.pause()
    try:
        sent = send_spans("grpc", edge.grpc_port, 2000, batch=100, must_deliver=True)  # durable in the edge's queue
        wait_until(lambda: edge.metric("edgeagent_upstream_online", exporter="kafka") == 0, timeout=30,
                   message="sends timing out while the broker is frozen: the exporter offline")
        time.sleep(1.0)  # the offline link probing with its backoff
    finally:
        kafka.resume()
    resumed = time.monotonic()
    found = wait_for_spans(kafka, first | sent, edge, timeout=30)
    took = time.monotonic() - resumed
    assert took < 10, f"the edge took {took:.1f}s to deliver once the broker answered again"
    wait_until(lambda: edge.metric("edgeagent_queue_items", exporter="kafka", data_type="traces") == 0, timeout=10,
               message="the edge's queue empty")
    assert edge.metric("otelcol_exporter_sent_spans", exporter="kafka") == 2100
    assert set(found) == first | sent  # nothing else: a span is at most in a message sent twice


def test_hub_killed_while_consuming_commits_only_durable_offsets(agents, upstream, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 2)
    edge = _edge(agents, tmp_path, kafka)
    sent = send_spans("grpc", edge.grpc_port, 8000, batch=100, must_deliver=True)  # 80 requests
    # not "80 messages": a produce retried after a stall can be in Kafka twice
    in_kafka = wait_for_spans(kafka, sent, edge, timeout=60)

    # a hub that can only take messages as fast as a slow upstream drains its small queue
    upstream.hang = 0.25
    receiver = {"session_timeout": "3s", "heartbeat_interval": "1s", "error_backoff": QUICK_RETRY}
    slow_queue = {"sending_queue": {"num_consumers": 2, "queue_size": 4}}
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), exporter=slow_queue, **receiver)
    wait_until(lambda: hub.metric("otelcol_receiver_accepted_spans") >= 1000, timeout=60,
               message="the hub consuming")
    accepted = hub.metric("otelcol_receiver_accepted_spans")
    assert accepted < 8000, "the hub should still be consuming when it is killed"
    hub.kill()  # SIGKILL: no shutdown, no final commit

    upstream.hang = 0.0
    restarted = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), **receiver)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=90, interval=0.25, message="every span upstream")
    counts = collections.Counter(span.span_id for span in upstream.spans())
    duplicates = sum(count - 1 for count in counts.values()) - sum(count - 1 for count in in_kafka.values())
    # beyond spans the edge wrote twice: at most what became durable after the last commit (200 ms) and
    # what was in flight upstream
    assert duplicates <= 20 * 100, f"{duplicates} duplicate spans"
    wait_until(lambda: _lag(restarted) and not any(_lag(restarted).values()), timeout=30,
               message="every offset committed")


def test_two_hub_replicas_share_the_partitions_and_take_over_when_one_stops(agents, upstream, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 4)
    receiver = {"session_timeout": "3s", "heartbeat_interval": "1s"}
    first = _hub(agents, tmp_path, kafka, upstream, name="hub-a", signals=("traces",), **receiver)
    second = _hub(agents, tmp_path, kafka, upstream, name="hub-b", signals=("traces",), **receiver)
    wait_until(lambda: len(_lag(first)) == 2 and len(_lag(second)) == 2, timeout=60, interval=0.5,
               message="the hubs owning two partitions each")
    assert set(_lag(first)).isdisjoint(_lag(second))

    edge = _edge(agents, tmp_path, kafka, partition_traces_by_id=True)
    # one trace per span, so one message per span: keys on every partition
    sent = send_spans("grpc", edge.grpc_port, 800, batch=200, must_deliver=True)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="every span upstream")
    in_kafka = sum(kafka.span_ids().values())  # 800, and more if a produce was retried after a stall
    wait_until(lambda: sum(hub.metric("otelcol_receiver_accepted_spans") for hub in (first, second)) == in_kafka,
               timeout=30, message=f"the hubs accepting the {in_kafka} spans in Kafka")
    shares = [hub.metric("otelcol_receiver_accepted_spans") for hub in (first, second)]
    assert all(shares), shares

    assert second.terminate() == 0  # leaves the group after committing what it made durable
    wait_until(lambda: len(_lag(first)) == 4, timeout=60, interval=0.5, message="the first hub owning all four")
    more = send_spans("grpc", edge.grpc_port, 400, batch=200, must_deliver=True)
    wait_until(lambda: upstream.span_ids() >= sent | more, timeout=60, interval=0.25,
               message="every later span upstream through the remaining hub")
    later = sum(kafka.span_ids().values()) - in_kafka  # 400, and more if a produce was retried
    wait_until(lambda: first.metric("otelcol_receiver_accepted_spans") == shares[0] + later, timeout=30,
               message=f"the remaining hub accepting the {later} later spans in Kafka")


def test_a_malformed_message_is_skipped_counted_and_committed(agents, upstream, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 1)
    kafka.produce("otlp_spans", [b"\xff\xff\xff not an ExportTraceServiceRequest"])
    edge = _edge(agents, tmp_path, kafka)
    sent = send_spans("grpc", edge.grpc_port, 500, batch=100, must_deliver=True)
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",))

    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="the good spans upstream")
    assert hub.metric("otelcol_kafka_receiver_unmarshal_failed_spans", receiver="kafka", topic="otlp_spans") == 1
    wait_until(lambda: _lag(hub) == {"0": 0.0}, timeout=30, message="every offset committed, the bad one too")
    assert len(kafka.all_records("otlp_spans")) >= 6  # the bad one and 5 requests (a retried one twice)
    assert "do not decode" in hub.log()


def test_a_record_batch_that_does_not_decompress_is_skipped_and_no_other_message_is_lost(agents, upstream, kafka,
                                                                                          tmp_path):
    kafka.create_topic("otlp_spans", 2)
    before, sent = trace_requests(3)
    kafka.produce("otlp_spans", before, partition=0)
    kafka.produce_undecodable("otlp_spans", trace_requests(3)[0], partition=0)
    after, later = trace_requests(3)
    kafka.produce("otlp_spans", after, partition=0)
    other, elsewhere = trace_requests(4)
    kafka.produce("otlp_spans", other, partition=1)
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",))

    everything = sent | later | elsewhere
    wait_until(lambda: upstream.span_ids() >= everything, timeout=60, interval=0.25,
               message=f"every readable span upstream\n{hub.log()}")
    assert hub.process.poll() is None, hub.log()
    assert hub.metric("otelcol_kafka_receiver_unmarshal_failed_spans", receiver="kafka", topic="otlp_spans") == 3
    wait_until(lambda: _lag(hub) == {"0": 0.0, "1": 0.0}, timeout=30,
               message="every offset committed, the unreadable batch's too")
    assert "do not decode" in hub.log()


def test_a_compression_bomb_is_skipped_counted_and_committed_and_never_inflated_whole(agents, upstream, kafka,
                                                                                     tmp_path):
    # 32 KB of zstd expanding to 1 GiB, one batch of three records between compressed batches under
    # the bound: before, the hub inflated all of it, once for each of its offsets stepped over
    kafka.create_topic("otlp_spans", 1)
    before, sent = trace_requests(3)
    kafka.produce("otlp_spans", before, partition=0, compression="zstd")
    kafka.produce_bomb("otlp_spans", [bytes(300 << 10)] * 3, partition=0, codec="zstd", expanded=1 << 30)
    after, later = trace_requests(3)
    kafka.produce("otlp_spans", after, partition=0, compression="gzip")
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), max_decompress_batch_bytes=1 << 20)

    wait_until(lambda: upstream.span_ids() >= sent | later, timeout=60, interval=0.25,
               message=f"the spans on either side of the bomb upstream\n{hub.log()}")
    assert hub.metric("otelcol_kafka_receiver_unmarshal_failed_spans", receiver="kafka", topic="otlp_spans") == 3
    assert hub.process is not None
    with open(f"/proc/{hub.process.pid}/status") as status:
        peak = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmHWM:"))
    assert peak < 256 << 20, f"the hub peaked at {peak >> 20} MiB"
    wait_until(lambda: _lag(hub) == {"0": 0.0}, timeout=30, message="every offset committed, the bomb's too")
    assert "max_decompress_batch_bytes" in hub.log()


def test_a_message_larger_than_the_whole_queue_is_skipped_not_retried_for_good(agents, upstream, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 1)
    big, _ = trace_requests(1, spans=50)  # queue_size 20 items: it could not fit in the queue even when empty
    good, sent = trace_requests(3)
    kafka.produce("otlp_spans", big + good, partition=0)
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",),
               exporter={"sending_queue": {"sizer": "items", "queue_size": 20, "num_consumers": 2}})

    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="the spans that fit upstream")
    wait_until(lambda: _lag(hub) == {"0": 0.0}, timeout=30, message="every offset committed, the big message's too")
    assert hub.metric("otelcol_kafka_receiver_unmarshal_failed_spans", receiver="kafka", topic="otlp_spans") == 1
    assert "could never fit" in hub.log()


def test_lag_appears_while_the_hub_refuses_and_returns_to_zero(agents, upstream, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 2)
    edge = _edge(agents, tmp_path, kafka)
    sent = send_spans("grpc", edge.grpc_port, 3000, batch=100)  # 30 messages
    upstream.status = 503  # the hub's queue fills up and it refuses what Kafka holds
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), error_backoff=QUICK_RETRY,
               exporter={"sending_queue": {"num_consumers": 1, "queue_size": 3}})

    wait_until(lambda: sum(_lag(hub).values()) >= 20, timeout=60, interval=0.25,
               message="a lag of the messages the full queue refuses")
    time.sleep(1.0)  # refused messages are retried, not skipped: the lag stays
    assert sum(_lag(hub).values()) >= 20
    assert hub.metric("otelcol_receiver_refused_spans", receiver="kafka") > 0

    upstream.status = 200
    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="every span upstream")
    wait_until(lambda: set(_lag(hub).values()) == {0.0}, timeout=30, message="the lag back to 0")
    metrics = hub.metrics()
    assert any(key.startswith('kafka_consumer_lag{group="hub",partition="0",topic="otlp_spans"}') for key in metrics)


def test_messages_the_memory_limiter_refuses_are_counted_as_otelcols_and_kept_in_kafka(agents, upstream, kafka,
                                                                                       tmp_path):
    kafka.create_topic("otlp_spans", 1)
    requests, _ = trace_requests(2, spans=5)
    kafka.produce("otlp_spans", requests, partition=0)
    # a limit below what the hub uses: it refuses every offer, and Kafka keeps the messages
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), error_backoff=QUICK_RETRY,
               processors={"memory_limiter": {"check_interval": "100ms", "limit_mib": 1}})

    wait_until(lambda: hub.metric("otelcol_receiver_refused_spans", receiver="kafka", transport="kafka") >= 10,
               timeout=30, interval=0.25, message=f"the refused spans counted\n{hub.log()}")
    refused = hub.metric("otelcol_processor_memory_limiter_refused_spans", processor="memory_limiter")
    assert refused >= 10 and refused % 5 == 0  # each offer of a message counts its spans, as otelcol's does
    assert sum(_lag(hub).values()) == 2
    assert upstream.spans() == []


@needs_rotel
def test_a_hub_reads_what_another_collectors_kafka_exporter_wrote(agents, upstream, kafka, tmp_path):
    # rotel's kafka exporter (Rust, librdkafka) writes Export*ServiceRequest protobuf as otelcol does
    _topics(kafka, partitions=2)
    rotel = Rotel(tmp_path / "rotel", ["--exporter", "kafka", "--kafka-exporter-brokers", kafka.bootstrap,
                                       "--kafka-exporter-format", "protobuf", "--kafka-exporter-traces-topic",
                                       "otlp_spans", "--batch-timeout", "50ms"]).start()
    try:
        hub = _hub(agents, tmp_path, kafka, upstream)
        sent = send_spans("grpc", rotel.grpc_port, 2000, service="via-rotel", batch=200)
        send_logs("http", rotel.http_port, count=10)
        wait_until(lambda: upstream.span_ids() >= sent and len(upstream.log_records()) >= 10, timeout=60,
                   interval=0.25, message="rotel's spans and logs upstream through Kafka and the hub")
    finally:
        rotel.stop()
    assert upstream.span_ids() == sent
    assert hub.metric("otelcol_kafka_receiver_unmarshal_failed_spans") == 0


def test_a_hub_with_tail_sampling_commits_offsets_once_spans_are_in_the_sampler_buffer(agents, upstream, kafka,
                                                                                      tmp_path):
    kafka.create_topic("otlp_spans", 2)
    edge = _edge(agents, tmp_path, kafka, partition_traces_by_id=True)
    sent = _send_traces(edge.grpc_port, traces=30, spans_per_trace=4)
    sampling = {"tail_sampling": {"decision_wait": "1s", "policies": [{"name": "all", "type": "always_sample"}]}}
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), processors=sampling)

    expected = set().union(*sent.values())
    wait_until(lambda: upstream.span_ids() >= expected, timeout=60, interval=0.25, message="every kept span upstream")
    by_trace = collections.defaultdict(set)
    for span in upstream.spans():
        by_trace[span.trace_id].add(span.span_id)
    assert by_trace == sent  # whole traces, as the sampler kept them
    wait_until(lambda: _lag(hub) and not any(_lag(hub).values()), timeout=30, message="every offset committed")


def test_a_sampler_whose_export_queue_stays_full_warns_once_not_every_tick(agents, upstream, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 1)
    sampling = {"tail_sampling": {"decision_wait": "200ms", "policies": [{"name": "all", "type": "always_sample"}]}}
    offline = f"http://127.0.0.1:{free_port()}"  # nothing listens: the one queued record stays
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), processors=sampling,
               exporter={"endpoint": offline, "sending_queue": {"queue_size": 1, "num_consumers": 1}})
    kafka.produce("otlp_spans", trace_requests(1)[0], partition=0)
    wait_until(lambda: hub.metric("otelcol_exporter_queue_size", exporter="otlphttp") == 1, timeout=30,
               message="the first decided traces queued")
    kafka.produce("otlp_spans", trace_requests(1)[0], partition=0)  # decided, but the queue is full
    time.sleep(1)  # about 20 ticks of the sampler (one every 50 ms at this decision_wait)
    stuck = [line for line in hub.log().splitlines() if "could not queue decided traces" in line]
    assert len(stuck) == 1, stuck


def test_a_sampler_round_keeping_more_spans_than_an_items_sized_queue_holds_still_delivers(agents, upstream, kafka,
                                                                                          tmp_path):
    kafka.create_topic("otlp_spans", 1)
    requests, sent = trace_requests(6)  # 30 traces of one span, decided in one round
    kafka.produce("otlp_spans", requests, partition=0)
    sampling = {"tail_sampling": {"decision_wait": "1s", "policies": [{"name": "all", "type": "always_sample"}]}}
    _hub(agents, tmp_path, kafka, upstream, signals=("traces",), processors=sampling,
         exporter={"sending_queue": {"sizer": "items", "queue_size": 20, "num_consumers": 2}})
    wait_until(lambda: upstream.span_ids() >= sent, timeout=20, interval=0.25, message="every kept span upstream")


def test_a_kept_trace_more_than_an_items_sized_queue_holds_is_dropped_said_so_and_the_rest_delivered(
        agents, upstream, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 1)
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    huge = os.urandom(16)
    for _ in range(25):  # one trace of 25 spans: more than the queue's 20 items
        scope.spans.add(trace_id=huge, span_id=os.urandom(8), name="s")
    others, sent = trace_requests(4)
    kafka.produce("otlp_spans", [request.SerializeToString(), *others], partition=0)
    sampling = {"tail_sampling": {"decision_wait": "1s", "policies": [{"name": "all", "type": "always_sample"}]}}
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), processors=sampling,
               exporter={"sending_queue": {"sizer": "items", "queue_size": 20, "num_consumers": 2}})
    wait_until(lambda: upstream.span_ids() >= sent, timeout=20, interval=0.25, message="every other kept span upstream")
    wait_until(lambda: huge.hex() in hub.log(), timeout=5, message="the dropped trace named in the log")
    dropped = [line for line in hub.log().splitlines() if huge.hex() in line]
    assert len(dropped) == 1 and "queue_size" in dropped[0], dropped


def test_dense_messages_are_parsed_within_the_memory_limit(agents, kafka, tmp_path):
    # a message of 480k empty spans is under 1 MB in Kafka and about 90 MiB once parsed: the hub
    # reserves what parsing may take before it parses, as its HTTP and gRPC receivers do, so messages
    # in flight together cannot take it past the memory limiter's hard limit (before: 382 MiB of 250)
    kafka.create_topic("otlp_spans", 1)
    dense = length_delimited(1, length_delimited(2, b"\x12\x00" * 480_000))
    kafka.produce("otlp_spans", [dense] * 4)
    nowhere = types.SimpleNamespace(url=f"http://127.0.0.1:{free_port()}")  # the data stays queued
    limiter = {"memory_limiter": {"check_interval": "1s", "limit_mib": 250, "spike_limit_mib": 50}}
    hub = _hub(agents, tmp_path, kafka, nowhere, signals=("traces",), processors=limiter)
    wait_until(lambda: hub.metric("otelcol_receiver_accepted_spans", receiver="kafka") == 4 * 480_000, timeout=60,
               interval=0.5, message="every dense message accepted")
    assert hub.process is not None
    with open(f"/proc/{hub.process.pid}/status") as status:
        peak = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmHWM:"))
    assert peak < 250 << 20, f"the hub peaked at {peak >> 20} MiB"


def test_a_refusing_pipeline_holds_a_bounded_kafka_backlog_whatever_the_partitions(agents, kafka, tmp_path):
    # the hub's queue is full (its upstream is away): the messages it fetched wait in memory, a
    # window of them retried. 6 partitions of 35 MB each: before, each partition held its own 32 MiB
    # backlog, and each retried message stayed parsed between offers (380 MiB; 16 partitions: 1 GiB)
    kafka.create_topic("otlp_spans", 6)
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(2000):
        scope.spans.add(name="x" * 400, trace_id=index.to_bytes(16, "big"), span_id=index.to_bytes(8, "big"))
    body = request.SerializeToString()  # 868 KB
    for partition in range(6):
        kafka.produce("otlp_spans", [body] * 40, partition=partition)
    nowhere = types.SimpleNamespace(url=f"http://127.0.0.1:{free_port()}")
    hub = _hub(agents, tmp_path, kafka, nowhere, signals=("traces",),
               exporter={"sending_queue": {"num_consumers": 1, "queue_size": 2}})
    assert hub.process is not None
    wait_until(lambda: hub.metric("otelcol_receiver_refused_spans", receiver="kafka") > 0, timeout=30,
               message="the full queue refusing Kafka messages")
    peak = 0
    for _ in range(20):  # 5 s: the backlogs fill within a few seconds
        with open(f"/proc/{hub.process.pid}/status") as status:
            peak = max(peak, next(int(line.split()[1]) << 10 for line in status if line.startswith("RssAnon:")))
        time.sleep(0.25)
    assert peak < 256 << 20, f"the hub held {peak >> 20} MiB"


@pytest.mark.parametrize("queue", [{"wait_for_result": True}, {"enabled": False}], ids=["wait_for_result", "direct"])
def test_a_message_the_upstream_refuses_for_good_does_not_hold_its_partition(agents, upstream, kafka, tmp_path,
                                                                            queue):
    # refused for good: dead-lettered once (wait_for_result), or refused by an exporter without a
    # queue; offered again, it was refused again for as long as the upstream said so, the partition
    # stuck behind it, and (wait_for_result) each offer dead-lettered it once more
    kafka.create_topic("otlp_spans", 1)
    upstream.status = 400
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), error_backoff=QUICK_RETRY,
               exporter={"sending_queue": queue})
    kafka.produce("otlp_spans", [_request(3)])
    wait_until(lambda: upstream.calls, timeout=30, message="the message offered upstream")
    wait_until(lambda: _lag(hub) == {"0": 0.0}, timeout=10, message="its offset committed while the upstream "
                                                                     "still refuses it")
    assert hub.metric("edgeagent_deadletter_items_total", exporter="otlphttp") == (3 if "wait_for_result" in queue
                                                                                  else 0)
    assert len(upstream.calls) == 1
    assert "refuses Kafka messages for good" in hub.log()


def _request(spans: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        scope.spans.add(name="op", trace_id=b"\x01" * 16, span_id=(index + 1).to_bytes(8, "big"))
    return request.SerializeToString()


def test_a_messages_headers_topic_and_partition_are_its_request_metadata_as_in_otelcol(agents, upstream, kafka,
                                                                                      tmp_path):
    # otelcol's kafka receiver gives each message's records headers, kafka.topic, kafka.partition and
    # kafka.offset as the request metadata that from_context and metadata_keys read; the hub gave
    # none, so an action reading a tenant header inserted nothing and metadata_keys batched tenants together
    kafka.create_topic("otlp_spans", 1)
    actions = [{"key": "tenant", "from_context": "x-tenant", "action": "insert"},
               {"key": "topic", "from_context": "kafka.topic", "action": "insert"},
               {"key": "partition", "from_context": "kafka.partition", "action": "insert"}]
    processors = {"attributes/context": {"actions": actions}}
    _hub(agents, tmp_path, kafka, upstream, signals=("traces",), processors=processors)
    kafka.produce("otlp_spans", [_request(2)], partition=0, headers=[("X-Tenant", b"blue")])
    wait_until(lambda: len(upstream.spans()) == 2, timeout=30, message="both spans upstream")
    for span in upstream.spans():
        attributes = {a.key: a.value.string_value for a in span.attributes}
        assert attributes == {"tenant": "blue", "topic": "otlp_spans", "partition": "0"}, attributes


def test_a_sampling_hub_reloaded_while_it_consumes_delivers_every_kept_span(agents, upstream, kafka, tmp_path):
    # a reload keeps the kafka receiver, which handed messages to the stopped sampler until the new
    # one started: those written after the new sampler read its buffer back were acknowledged (their
    # offsets committed) and decided by neither (before: 3365 of 224400 spans over six reloads)
    kafka.create_topic("otlp_spans", 2)
    sampling = {"tail_sampling": {"decision_wait": "1s", "policies": [{"name": "all", "type": "always_sample"}]}}
    hub = _hub(agents, tmp_path, kafka, upstream, signals=("traces",), processors=sampling)
    sent: set[bytes] = set()
    done = threading.Event()
    # 100 spans every 0.05 s, bounded; stopped after the reloads
    producer = threading.Thread(target=kafka.produce_until, args=("otlp_spans", done, lambda: trace_requests(20), sent),
                                kwargs={"rounds": 500, "pause": 0.05})
    producer.start()
    path = tmp_path / "hub.yaml"
    assert hub.process is not None
    try:
        for reload in range(1, 7):
            time.sleep(1.0)
            document = yaml.safe_load(path.read_text())
            document["processors"]["tail_sampling"]["policies"][0]["name"] = f"all-{reload}"
            path.write_text(yaml.safe_dump(document, sort_keys=False))
            os.kill(hub.process.pid, signal.SIGHUP)
            wait_until(lambda: hub.metric("edgeagent_config_reloads", result="applied") == reload,  # noqa: B023
                       timeout=30, message=f"reload {reload} applied")
    finally:
        done.set()
        producer.join(60)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.5,
               message="every span upstream")
