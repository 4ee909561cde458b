#!/usr/bin/env python3
"""Peak memory of draining a backlog with no batch size limit, and the largest request it sends.

Method
    1. Backlog.  An agent with no upstream (exporter endpoint "") takes --spans spans in
       OTLP/HTTP requests of 512 spans (bench/drain.py's bodies) and is stopped with SIGTERM.
    2. Drain.  A loopback OTLP/HTTP upstream (http.server in this process, answers 200 and notes
       each request's size) and the agent on that queue, with `--batch`:
       `processor`: the batch processor with `send_batch_size: 0`;
       `exporter`: `sending_queue::batch` with `min_size: 0`, `max_size: 0`;
       `large`: the batch processor with `send_batch_size: 1000000` (a size trigger no backlog of
       this size reaches, no max): requests are merged, up to the sender's byte bound.
       The agent's peak resident memory is its VmHWM (the kernel's high-water mark) read from
       /proc when the queue is empty; its resident memory at start-up is read at /health ready.

Printed: spans, requests the upstream got, the largest request in bytes, the agent's resident
memory when ready and its peak, and the drain's wall seconds.

Usage
    python bench/backlog_rss.py [--spans 300000] [--batch processor|exporter|large] [--repo PATH]
"""

from __future__ import annotations

import argparse
import http.server
import tempfile
import threading
import time
from pathlib import Path

import drain
from drain import Agent, BenchError, post_all

SPAN_COUNT_POLL = 0.2


class Upstream(http.server.ThreadingHTTPServer):
    """Answers every POST 200 with an empty body; notes each request's bytes."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", "0"))
        remaining = length
        while remaining:  # read and drop: the upstream itself must not hold the request
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)
        with self.server.lock:
            self.server.sizes.append(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


class Unbatched(Agent):
    """drain.Agent with a batch configuration that sets no size limit."""

    batch: str = "processor"

    def config(self) -> dict:
        config = super().config()
        exporter = config["exporters"][self.exporter]
        exporter["compression"] = "none"  # the upstream sees the request's protobuf size
        pipeline = config["service"]["pipelines"]["traces"]
        if self.batch == "processor":
            config["processors"] = {"batch": {"send_batch_size": 0}}
        elif self.batch == "large":
            config["processors"] = {"batch": {"send_batch_size": 1_000_000, "timeout": "1s"}}
        else:
            del config["processors"]
            del pipeline["processors"]
            exporter["sending_queue"]["batch"] = {"min_size": 0, "max_size": 0}
        return config


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def run(spans: int, batch: str) -> None:
    with tempfile.TemporaryDirectory(prefix="edgeagent-backlog-rss-") as tmp:
        workdir = Path(tmp)
        agent = Unbatched(workdir, "otlphttp", endpoint="")
        agent.batch = batch
        agent.start()
        try:
            post_all(agent.http_port, drain.bodies(spans))
            agent.wait_for(lambda: agent.metric("edgeagent_queue_items") >= spans, 300, "complete backlog")
        finally:
            agent.stop()
        upstream = Upstream()
        thread = threading.Thread(target=upstream.serve_forever, daemon=True)
        thread.start()
        try:
            agent = Unbatched(workdir, "otlphttp", endpoint=upstream.url, consumers=10)
            agent.batch = batch
            agent.start()
            assert agent.proc is not None
            ready_kib = status_kib(agent.proc.pid, "VmRSS")
            try:
                agent.wait_for(lambda: agent.metric("otelcol_exporter_sent_spans") >= spans
                               and agent.metric("edgeagent_queue_items") == 0, 900, "empty queue")
                wall = time.monotonic() - agent.spawned
                peak_kib = status_kib(agent.proc.pid, "VmHWM")
            finally:
                agent.stop()
        finally:
            upstream.shutdown()
            upstream.server_close()
    print(f"batch={batch} spans={spans:,} requests={len(upstream.sizes)} largest_request={max(upstream.sizes):,} B "
          f"rss_ready={ready_kib / 1024:.0f} MiB rss_peak={peak_kib / 1024:.0f} MiB wall={wall:.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--batch", choices=("processor", "exporter", "large"), default="processor")
    parser.add_argument("--repo", type=Path, help="the source tree whose agent runs (default: this one)")
    args = parser.parse_args()
    if args.repo is not None:
        drain.REPO = args.repo
    run(args.spans, args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
