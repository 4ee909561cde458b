"""Clustered hubs end to end: an edge agent writes traces to Kafka partitioned by trace id
(4 partitions, tansu on loopback); two hub replicas in one consumer group sample whole traces
and share their decisions in a real redis-server; the kept traces reach the upstream. Late spans
sent after the decisions, once one replica is gone, follow the decisions it made."""

from __future__ import annotations

import os
import threading
import time

import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.agent import AgentProcess
from tests.helpers.kafka import edge_config, hub_config
from tests.helpers.net import wait_until
from tests.helpers.traces import Client, span_ids_by_trace


def _sampling_hub(agents, tmp_path, kafka, upstream, redis_server, name: str,
                  env: dict[str, str] | None = None) -> AgentProcess:
    ports = AgentProcess(args=[])
    config = hub_config(tmp_path / f"{name}.yaml", kafka.bootstrap, upstream.url, ports, ("traces",),
                        session_timeout="3s", heartbeat_interval="1s")
    document = yaml.safe_load(open(config))
    document["processors"] = {"tail_sampling": {
        "decision_wait": "2s",
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}],
        "shared_state": {"redis": {"url": redis_server.url, "flush_interval": "2ms"}}}}
    document["service"]["pipelines"]["traces"]["processors"] = ["tail_sampling"]
    open(config, "w").write(yaml.safe_dump(document))
    return agents(["run", "--config", config, "--state-dir", str(tmp_path / name)], env=env, ports=ports,
                  port_overrides=False)


def _partitions(agent: AgentProcess) -> set[str]:
    return {key.split('partition="')[1].split('"')[0] for key in agent.metrics()
            if key.startswith("kafka_consumer_lag{")}


def test_two_sampling_replicas_keep_whole_traces_once_and_late_spans_follow_across_replicas(
        agents, upstream, kafka, redis_server, tmp_path):
    kafka.create_topic("otlp_spans", 4)
    first = _sampling_hub(agents, tmp_path, kafka, upstream, redis_server, "hub-a")
    second = _sampling_hub(agents, tmp_path, kafka, upstream, redis_server, "hub-b")
    wait_until(lambda: len(_partitions(first)) == 2 and len(_partitions(second)) == 2, timeout=60, interval=0.5,
               message="the replicas owning two partitions each")
    edge = agents(["run", "--config", edge_config(tmp_path / "edge.yaml", kafka.bootstrap, partition_traces_by_id=True),
                   "--state-dir", str(tmp_path / "edge")])

    client = Client(edge.http_port)
    kept, dropped = {}, {}
    for index in range(40):
        trace_id, spans = client.trace("error" if index % 2 else "plain")
        (kept if index % 2 else dropped)[trace_id] = spans
    client.flush()
    expected = sum(len(spans) for spans in kept.values())
    wait_until(lambda: sum(len(s) for s in span_ids_by_trace(upstream).values()) >= expected, timeout=60,
               interval=0.25, message="every kept trace upstream")
    time.sleep(1.0)
    assert span_ids_by_trace(upstream) == kept  # whole traces, each decided once, nothing dropped let through
    decided = [hub.metric("otelcol_processor_tail_sampling_global_count_traces_sampled", sampled="true")
               for hub in (first, second)]
    assert all(decided) and sum(decided) == len(kept), decided  # both replicas decided, each trace once

    # one replica leaves; the other takes its partitions, and late spans of the traces it never
    # saw follow the decisions in Redis
    assert second.terminate() == 0
    wait_until(lambda: len(_partitions(first)) == 4, timeout=60, interval=0.5, message="one replica owning all four")
    late = {trace_id: client.late_span(trace_id, next(iter(spans))) for trace_id, spans in {**kept, **dropped}.items()}
    client.close()
    for trace_id in kept:
        kept[trace_id].add(late[trace_id])
    wait_until(lambda: span_ids_by_trace(upstream) == kept, timeout=60, interval=0.25,
               message="late spans of kept traces upstream")
    time.sleep(1.0)
    assert span_ids_by_trace(upstream) == kept
    assert first.metric("edgeagent_sampler_shared_state_found_decisions", sampled="true") > 0
    assert first.metric("edgeagent_sampler_shared_state_found_decisions", sampled="false") > 0


def _error_traces(messages: int) -> tuple[list[bytes], set[bytes]]:
    """`messages` requests of 5 traces of 3 error spans each (the policy keeps them all); their span ids."""
    requests, span_ids = [], set()
    for _ in range(messages):
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        for _ in range(5):
            trace_id = os.urandom(16)
            for _ in range(3):
                span = scope.spans.add(trace_id=trace_id, span_id=os.urandom(8), name="step")
                span.status.code = 2
                span_ids.add(span.span_id)
        requests.append(request.SerializeToString())
    return requests, span_ids


def test_a_replica_that_joins_then_leaves_with_a_drain_delivers_every_kept_span(
        agents, upstream, kafka, redis_server, tmp_path):
    # a replica scaled down drains: it committed the offsets of what its sampler held, and the
    # drain, ended at once by an empty export queue, left those traces on its volume (before: 4980
    # of 60000 spans)
    kafka.create_topic("otlp_spans", 4)
    first = _sampling_hub(agents, tmp_path, kafka, upstream, redis_server, "hub-a")
    wait_until(lambda: len(_partitions(first)) == 4, timeout=60, interval=0.5, message="one replica owning all four")
    sent: set[bytes] = set()
    done = threading.Event()
    # 150 spans every 0.2 s, bounded; stopped once the second replica is gone. The second holds a
    # decision_wait's worth of its partitions' traces when it leaves, about 700 spans.
    producer = threading.Thread(target=kafka.produce_until, args=("otlp_spans", done, lambda: _error_traces(10), sent),
                                kwargs={"rounds": 400, "pause": 0.2, "partitions": 4})
    producer.start()
    try:
        time.sleep(1)
        second = _sampling_hub(agents, tmp_path, kafka, upstream, redis_server, "hub-b",
                               env={"EDGEAGENT_DRAIN_TIMEOUT": "10"})
        wait_until(lambda: len(_partitions(second)) == 2, timeout=60, interval=0.5, message="the second owning two")
        time.sleep(2)  # a decision_wait: it holds traces when it leaves
        assert second.terminate() == 0
        wait_until(lambda: len(_partitions(first)) == 4, timeout=60, interval=0.5, message="the first owning all")
        time.sleep(1)
    finally:
        done.set()
        producer.join(120)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.5, message="every kept span upstream")
