"""A hub stopped while it consumes a Kafka backlog: it exits within its grace period, commits
offsets only for data that is durable, and after a restart every trace the policy keeps
arrives upstream; the traces its tail-sampling stage was holding are decided from disk.

Real processes over loopback: the tansu broker holding tens of thousands of spans in whole
traces, one hub (kafka receiver -> tail_sampling -> otlphttp) and the recording upstream.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import signal
import time

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tests.helpers.agent import AgentProcess
from tests.helpers.kafka import hub_config
from tests.helpers.net import wait_until

TOPIC, PARTITIONS, GROUP = "otlp_spans", 2, "hub"
TRACES, SPANS_PER_TRACE, TRACES_PER_MESSAGE = 6000, 10, 10  # 60 000 spans in 600 messages
FIRST = 150  # messages in Kafka before the hub starts; the rest arrive once its export queue fills
DRAIN_TIMEOUT, GRACE = 3.0, 20.0  # the hub's EDGEAGENT_DRAIN_TIMEOUT; a StatefulSet's grace period, scaled down
WINDOW = 16  # messages of a partition in flight at once (edgeagent.receivers.kafka._WINDOW)


def _backlog() -> tuple[list[bytes], dict[bytes, set[bytes]], dict[bytes, int]]:
    """The messages; trace id -> span ids of the traces the policy keeps; trace id -> message index."""
    messages, kept, where = [], {}, {}
    for first in range(0, TRACES, TRACES_PER_MESSAGE):
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(key="service.name").value.string_value = "shop"
        scope = resource_spans.scope_spans.add()
        for trace in range(first, first + TRACES_PER_MESSAGE):
            trace_id = os.urandom(16)
            where[trace_id] = len(messages)
            spans = set()
            for index in range(SPANS_PER_TRACE):
                span = scope.spans.add(trace_id=trace_id, span_id=os.urandom(8), name=f"step-{index}",
                                       start_time_unix_nano=1, end_time_unix_nano=2)
                if index == SPANS_PER_TRACE - 1 and trace % 2:
                    span.status.code = Status.STATUS_CODE_ERROR
                spans.add(span.span_id)
            if trace % 2:
                kept[trace_id] = spans
        messages.append(request.SerializeToString())
    return messages, kept, where


def _produce(kafka, messages: list[bytes], start: int = 0) -> dict[int, list[int]]:
    """Messages spread over the partitions; returns partition -> message indexes (from `start`) in offset order."""
    from aiokafka import AIOKafkaProducer

    async def send() -> dict[int, list[int]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", max_request_size=8 << 20)
        await producer.start()
        order: dict[int, list[int]] = collections.defaultdict(list)
        try:
            for index, value in enumerate(messages, start):  # one at a time, so the offsets follow the list
                metadata = await (await producer.send(TOPIC, value, partition=index % PARTITIONS))
                order[metadata.partition].append(index)
        finally:
            await producer.stop()
        return order

    return asyncio.run(send())


def _committed(kafka) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=GROUP, enable_auto_commit=False)
        await consumer.start()
        try:
            return {p: (await consumer.committed(TopicPartition(TOPIC, p))) or 0 for p in range(PARTITIONS)}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _hub(agents, tmp_path, kafka, upstream, redis_url: str | None, decision_wait: str,
         ports: AgentProcess | None = None) -> AgentProcess:
    ports = ports or AgentProcess(args=[])
    config = hub_config(tmp_path / "hub.yaml", kafka.bootstrap, upstream.url, ports, ("traces",),
                        session_timeout="3s", heartbeat_interval="1s",
                        max_partition_fetch_size=16384)  # a few messages per fetch: the stop finds it consuming
    with open(config) as handle:
        document = yaml.safe_load(handle)
    document["processors"] = {"tail_sampling": {
        "decision_wait": decision_wait, "num_traces": 50_000,
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]}}
    if redis_url:  # decisions shared with other replicas, as in hub-cluster.yaml
        document["processors"]["tail_sampling"]["shared_state"] = {"redis": {"url": redis_url}}
    document["service"]["pipelines"]["traces"]["processors"] = ["tail_sampling"]
    with open(config, "w") as handle:
        handle.write(yaml.safe_dump(document))
    return agents(["run", "--config", config, "--state-dir", str(tmp_path / "hub-state")], ports=ports,
                  port_overrides=False, env={"EDGEAGENT_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT)})


def _resumed_traces(agent: AgentProcess) -> int:
    """Traces the tail-sampling stage found on disk at its start (its log line says how many)."""
    for line in agent.log().splitlines():
        if "tail sampling resumed the traces it was holding" in line:
            return int(json.loads(line)["traces"])
    return 0


@pytest.mark.parametrize("shared", ["local", "redis"])
def test_a_hub_stopped_while_it_consumes_loses_no_kept_trace_and_decides_its_pending_ones_after_restart(
        agents, upstream, kafka, tmp_path, request, shared):
    redis_url = request.getfixturevalue("redis_server").url if shared == "redis" else None
    kafka.create_topic(TOPIC, PARTITIONS)
    messages, kept, where = _backlog()
    order = _produce(kafka, messages[:FIRST])

    upstream.status = 503  # kept traces wait in the export queue: the stop has something to drain
    # a decision_wait well over the drain (3 s), during which the stage goes on deciding: the traces
    # taken in during the last few seconds before the stop are still pending at its end, even on a
    # loaded machine, and must come back from disk after the restart
    hub = _hub(agents, tmp_path, kafka, upstream, redis_url, "8s")
    wait_until(lambda: hub.metric("otelcol_exporter_queue_size") > 0, timeout=120, interval=0.1,
               message="kept traces in the export queue")
    # The rest is produced while the hub consumes it, and the stop comes early in it: the hub can
    # never have consumed all of it, however fast it is beside a producer slowed by a loaded machine.
    with concurrent.futures.ThreadPoolExecutor(1) as producer:
        rest = producer.submit(_produce, kafka, messages[FIRST:], FIRST)
        wait_until(lambda: hub.metric("otelcol_processor_tail_sampling_new_trace_id_received")
                   > (FIRST + 20) * TRACES_PER_MESSAGE, timeout=60, interval=0.05, message="the hub consuming the rest")
        assert hub.metric("otelcol_processor_tail_sampling_sampling_traces_on_memory") > 0
        hub.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = hub.process.wait(GRACE)
        took = time.monotonic() - signalled
        for partition, indexes in rest.result(timeout=120).items():
            order[partition] += indexes
    assert kafka.end_offsets(TOPIC) == {p: len(order[p]) for p in range(PARTITIONS)}
    hub._close()
    assert code == 0, hub.log()[-3000:]
    assert DRAIN_TIMEOUT - 0.5 < took < GRACE, took  # it kept sending for the drain timeout, then stopped
    assert "stopping with data still queued" in hub.log()
    upstream.status = 200

    # What the group committed covers only durable data: every kept trace of a committed message is
    # upstream already, or on the hub's disk (in the stage's buffer or the export queue) and
    # arrives after the restart without Kafka offering it again.
    committed = _committed(kafka)
    consumed = {index for p in range(PARTITIONS) for index in order[p][:committed[p]]}
    assert 0 < len(consumed) < len(messages), committed  # stopped in the middle of the backlog
    upstream_at_stop = {span.trace_id for span in upstream.spans()}
    held = {trace_id for trace_id in kept if where[trace_id] in consumed and trace_id not in upstream_at_stop}

    # nothing needs to outlast a stop any more: the restarted hub decides the traces it resumes at
    # once (they waited long enough before the stop) and the rest of the backlog after a second
    restarted = _hub(agents, tmp_path, kafka, upstream, redis_url, "1s", ports=hub)
    wait_until(lambda: {span.trace_id for span in upstream.spans()} >= set(kept), timeout=180, interval=0.5,
               message="every kept trace upstream after the restart")
    time.sleep(1.0)
    received = collections.defaultdict(list)
    for span in upstream.spans():
        received[span.trace_id].append(span.span_id)
    assert set(received) == set(kept)  # nothing the policy drops let through
    assert {trace_id: set(spans) for trace_id, spans in received.items()} == kept  # whole traces

    # At-least-once: a span is sent twice only if it was in flight at the stop (the receiver's
    # window of messages per partition that were not durable yet) or delivered but not yet acked.
    duplicates = sum(len(spans) - len(set(spans)) for spans in received.values())
    bound = WINDOW * PARTITIONS * TRACES_PER_MESSAGE * SPANS_PER_TRACE
    print(f"stopped after {took:.1f}s; committed {committed} of {kafka.end_offsets(TOPIC)}; "
          f"{len(held)} kept traces held on disk; {_resumed_traces(restarted)} resumed; {duplicates} duplicate spans")
    assert duplicates <= bound, duplicates
    assert held and _resumed_traces(restarted) > 0  # the stage's pending traces came back from disk
    assert restarted.terminate(GRACE) == 0
