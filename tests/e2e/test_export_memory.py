"""`edgeagent queue export` and `dead-letter export` against a running agent stream the answer:
the agent's memory does not grow with the backlog it exports.

A real agent holds a backlog of about 60 MB (the upstream refuses everything); the export runs
through the real CLI and control socket. The agent's anonymous resident memory (RssAnon: what it
allocated, not the queue file's pages it maps while reading, which the kernel may drop) is
sampled while the export runs and its peak compared with where it started. Before, the control
handler joined the whole export and the server copied it once more."""

from __future__ import annotations

import http.client
import os
import struct
import threading
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.cli import cli
from tests.helpers.net import wait_until

REQUESTS = 120
SPANS = 500
GROWTH_LIMIT_MIB = 24  # the export is ~60 MB: a joined answer grew the agent by about twice that


def _body(index: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for span in range(SPANS):
        added = scope.spans.add(name="export", span_id=(index * SPANS + span + 1).to_bytes(8, "big"),
                                trace_id=bytes(16))
        added.attributes.add(key="blob").value.bytes_value = os.urandom(1000)  # does not compress
    return request.SerializeToString()


def _post_backlog(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    total = 0
    try:
        for index in range(REQUESTS):
            body = _body(index)
            connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
            total += len(body)
    finally:
        connection.close()
    return total


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _export_growth_mib(pid: int, state: Path, *command: str) -> float:
    """How far the agent's RssAnon rose above its level at the start while `command` ran."""
    before = _status_kib(pid, "RssAnon")
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, _status_kib(pid, "RssAnon"))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        cli(state, *command)
    finally:
        done.set()
        sampler.join()
    return (peak - before) / 1024


def _spans_in_proto_export(path: Path) -> int:
    spans = 0
    with open(path, "rb") as handle:
        while head := handle.read(4):
            (length,) = struct.unpack(">I", head)
            request = ExportTraceServiceRequest.FromString(handle.read(length))
            spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    return spans


def test_exporting_a_large_backlog_from_a_running_agent_keeps_its_memory_bounded(agents, upstream, tmp_path):
    state = tmp_path / "state"
    upstream.status = 503  # reachable, refusing: everything stays queued
    agent = agents(["run", "--state-dir", str(state), "--upstream", upstream.url,
                    "--set", "exporters::otlphttp::sending_queue::num_consumers=1"])
    posted = _post_backlog(agent.http_port)
    wait_until(lambda: agent.metric("edgeagent_queue_items") >= REQUESTS * SPANS, timeout=60, message="the backlog")
    pid = agent.process.pid

    output = tmp_path / "export.bin"
    growth = _export_growth_mib(pid, state, "queue", "export", "--format", "otlp-proto", "-o", str(output))
    assert output.stat().st_size >= posted
    assert _spans_in_proto_export(output) == REQUESTS * SPANS
    assert growth < GROWTH_LIMIT_MIB, f"the agent grew by {growth:.0f} MiB exporting {posted >> 20} MiB"

    upstream.status = 400  # refused for good: the backlog moves to the dead-letter store
    wait_until(lambda: agent.metric("edgeagent_queue_items") == 0, timeout=120, interval=0.5,
               message="the backlog dead-lettered")
    letters = tmp_path / "letters.jsonl"
    growth = _export_growth_mib(pid, state, "queue", "dead-letter", "export", "-o", str(letters))
    assert letters.stat().st_size >= posted
    assert growth < GROWTH_LIMIT_MIB, f"the agent grew by {growth:.0f} MiB exporting dead letters"

    assert agent.terminate() == 0  # beside a stopped agent the CLI reads the files, streamed the same way
    offline = tmp_path / "letters-offline.jsonl"
    cli(state, "queue", "dead-letter", "export", "-o", str(offline))
    assert offline.read_bytes() == letters.read_bytes()
