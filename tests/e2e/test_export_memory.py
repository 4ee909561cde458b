"""`edgeagent queue export`, `dead-letter export` and `dead-letter list` stream the answer: the
agent's memory (and the CLI's, beside a stopped agent) does not grow with the backlog it reads.

A real agent holds a backlog of about 30 MB (the upstream refuses everything); the export runs
through the real CLI and control socket. The agent's anonymous resident memory (RssAnon: what it
allocated, not the queue file's pages it maps while reading, which the kernel may drop) is
sampled while the export runs and its peak compared with where it started. Before, the control
handler joined the whole export and the server copied it once more; `dead-letter list` read every
letter, its request included, into one list (20 MiB in the agent for this backlog, 28 MiB in the CLI).

Streamed, the agent grows by at most about 8 MiB whatever the backlog (one letter's JSON line at a
time); held at once, it grows with the backlog. 30 MB is enough to tell the two apart under the
limit below, at half the CPU time of a 60 MB backlog."""

from __future__ import annotations

import http.client
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.cli import cli
from tests.helpers.net import wait_until

REQUESTS = 60
SPANS = 500
GROWTH_LIMIT_MIB = 14  # the export is ~30 MB: a joined answer grew the agent by 55 MiB, a held list by 20


def _body(index: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for span in range(SPANS):
        added = scope.spans.add(name="export", span_id=(index * SPANS + span + 1).to_bytes(8, "big"),
                                trace_id=bytes(16))
        added.attributes.add(key="blob").value.bytes_value = os.urandom(1000)  # does not compress
    return request.SerializeToString()


def _post_backlog(port: int, requests: int = REQUESTS) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    total = 0
    try:
        for index in range(requests):
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


def _peak_kib(pid: int, done: threading.Event) -> Callable[[], int]:
    """Sample `pid`'s RssAnon until `done`; the returned call joins the sampler and gives the peak
    (0 once the process has gone)."""
    peak = 0

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            try:
                peak = max(peak, _status_kib(pid, "RssAnon"))
            except (OSError, AssertionError):  # exited (a zombie has no RssAnon)
                return

    sampler = threading.Thread(target=sample)
    sampler.start()

    def result() -> int:
        done.set()
        sampler.join()
        return peak
    return result


def _export_growth_mib(pid: int, state: Path, *command: str) -> tuple[float, bytes]:
    """How far the agent's RssAnon rose above its level at the start while `command` ran, and what
    the command wrote."""
    before = _status_kib(pid, "RssAnon")
    peak = _peak_kib(pid, threading.Event())
    try:
        out = cli(state, *command).stdout
    finally:
        grown = max(peak(), before) - before
    return grown / 1024, out


def _command_peak_mib(state: Path, *command: str) -> tuple[float, bytes]:
    """The peak RssAnon of the CLI process running `command` itself, and what it wrote."""
    process = subprocess.Popen([sys.executable, "-m", "edgeagent", *command, "--state-dir", str(state)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = _peak_kib(process.pid, threading.Event())
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    return peak() / 1024, out


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
    growth, _ = _export_growth_mib(pid, state, "queue", "export", "--format", "otlp-proto", "-o", str(output))
    assert output.stat().st_size >= posted
    assert _spans_in_proto_export(output) == REQUESTS * SPANS
    assert growth < GROWTH_LIMIT_MIB, f"the agent grew by {growth:.0f} MiB exporting {posted >> 20} MiB"

    upstream.status = 400  # refused for good: the backlog moves to the dead-letter store
    wait_until(lambda: agent.metric("edgeagent_queue_items") == 0, timeout=120, interval=0.5,
               message="the backlog dead-lettered")
    letters = tmp_path / "letters.jsonl"
    growth, _ = _export_growth_mib(pid, state, "queue", "dead-letter", "export", "-o", str(letters))
    assert letters.stat().st_size >= posted
    assert growth < GROWTH_LIMIT_MIB, f"the agent grew by {growth:.0f} MiB exporting dead letters"
    # listing reads the same letters: it streams them too, not all in memory at once
    growth, listed = _export_growth_mib(pid, state, "queue", "dead-letter", "list", "--json")
    assert sum(letter["items"] for letter in json.loads(listed)) == REQUESTS * SPANS
    assert growth < GROWTH_LIMIT_MIB, f"the agent grew by {growth:.0f} MiB listing dead letters"

    assert agent.terminate() == 0  # beside a stopped agent the CLI reads the files, streamed the same way
    offline = tmp_path / "letters-offline.jsonl"
    cli(state, "queue", "dead-letter", "export", "-o", str(offline))
    assert offline.read_bytes() == letters.read_bytes()
    baseline, _ = _command_peak_mib(state, "queue", "stats")  # the same imports and store, no letter read
    peak, listed_offline = _command_peak_mib(state, "queue", "dead-letter", "list", "--json")
    assert json.loads(listed_offline) == json.loads(listed)
    assert peak - baseline < GROWTH_LIMIT_MIB, f"listing dead letters took {peak - baseline:.0f} MiB more than stats"
    # purging them all counts and drops them: it read every one, its request included, first
    peak, purged = _command_peak_mib(state, "queue", "dead-letter", "purge", "--yes")
    assert json.loads(purged)["purged"] == len(json.loads(listed))
    assert peak - baseline < GROWTH_LIMIT_MIB, f"purging dead letters took {peak - baseline:.0f} MiB more than stats"
    assert cli(state, "queue", "dead-letter", "list").stdout == b""
