#!/usr/bin/env python3
"""The running agent's memory while `edgeagent queue export` writes a large backlog.

Method
    An agent with no upstream (exporter endpoint "") takes --mib MiB of OTLP/HTTP protobuf
    requests (500 spans, each with a 1000-byte random attribute: the queue cannot compress them).
    Then `edgeagent queue export --format F -o FILE` runs against it, once per format, while
    this script samples the agent's /proc status every 10 ms: its anonymous resident memory
    (RssAnon, what it allocated) and its whole resident memory (VmRSS, which also counts the
    queue file's pages it maps while reading).

Printed per format: the export's size and seconds, and the agent's RssAnon and VmRSS before
and at their peak during the export.

Usage
    python bench/export_rss.py [--mib 300] [--repo PATH]
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import drain
from drain import Agent
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SPANS = 500


def body(index: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for span in range(SPANS):
        added = scope.spans.add(name="export", span_id=(index * SPANS + span + 1).to_bytes(8, "big"),
                                trace_id=bytes(16))
        added.attributes.add(key="blob").value.bytes_value = os.urandom(1000)
    return request.SerializeToString()


def post(port: int, mib: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    total = index = 0
    try:
        while total < mib << 20:
            data = body(index)
            connection.request("POST", "/v1/traces", body=data, headers={"Content-Type": "application/x-protobuf"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"agent answered {response.status}")
            total += len(data)
            index += 1
    finally:
        connection.close()
    return index * SPANS


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def export(agent: Agent, workdir: Path, fmt: str) -> None:
    assert agent.proc is not None
    pid = agent.proc.pid
    before = {field: kib(pid, field) for field in ("RssAnon", "VmRSS")}
    peak = dict(before)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            for field in peak:
                peak[field] = max(peak[field], kib(pid, field))

    output = workdir / f"export.{fmt}"
    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "edgeagent", "queue", "export", "--format", fmt, "-o", str(output),
                        "--state-dir", str(workdir / "state"), "--timeout", "600"],
                       cwd=drain.REPO, check=True, stdin=subprocess.DEVNULL)
    finally:
        done.set()
        sampler.join()
    seconds = time.monotonic() - started
    print(f"{fmt:<10} export {output.stat().st_size / (1 << 20):7.0f} MiB in {seconds:5.1f} s   "
          f"RssAnon {before['RssAnon'] >> 10:4d} -> peak {peak['RssAnon'] >> 10:5d} MiB   "
          f"VmRSS {before['VmRSS'] >> 10:4d} -> peak {peak['VmRSS'] >> 10:5d} MiB", flush=True)
    output.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=300)
    parser.add_argument("--repo", type=Path, help="the source tree whose agent and CLI run (default: this one)")
    args = parser.parse_args()
    if args.repo is not None:
        drain.REPO = args.repo
    with tempfile.TemporaryDirectory(prefix="edgeagent-export-rss-") as tmp:
        workdir = Path(tmp)
        agent = Agent(workdir, "otlphttp", endpoint="").start()
        try:
            spans = post(agent.http_port, args.mib)
            agent.wait_for(lambda: agent.metric("edgeagent_queue_items") >= spans, 300, "the backlog")
            for fmt in ("otlp-proto", "otlp-json"):
                export(agent, workdir, fmt)
        finally:
            agent.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
