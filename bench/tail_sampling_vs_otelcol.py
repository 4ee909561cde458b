#!/usr/bin/env python3
"""Tail sampling end to end, edgeagent and otelcol 0.165 side by side: spans per second per core.

Method
    Each target runs alone on CPU 0 (otelcol with GOMAXPROCS=1); this script, its load threads
    and a counting sink (a process of its own) run on CPU 1. Pipelines are the same:
      otelcol:   otlp (HTTP) -> tail_sampling (decision_wait 1s) -> batch -> otlp_http -> sink
      edgeagent: otlp (HTTP) -> tail_sampling (decision_wait 1s) -> otlphttp -> sink
                 (its batching is the sender's; its buffer is the durable raw-traces table)
    Load: OTLP/HTTP protobuf requests of 512 spans, 51 traces of 10 spans and one of 2, posted
    as fast as the target answers by --connections threads. Every request gets fresh random
    trace ids (patched into a few prebuilt templates), so no trace repeats across requests.
    After --warmup seconds, a --seconds window is measured:
      accepted  spans answered 200 by the target, per second;
      done      spans that reached the end of the pipeline, per second: spans of traces decided
                not sampled (the processor's global_count_traces_sampled{sampled="false"} times
                the spans per trace) plus spans the sink received;
      ratio     edgeagent / otelcol.
    Then the load stops and, after decision_wait + 1 s, each target must have decided every
    trace it accepted (the buffer drains) and the kept fraction is printed: decisions kept up.
    Cases: a single status_code ERROR policy, and a mixed set (latency, probabilistic,
    string_attribute, rate_limiting, and). --runs repeats both targets, so ranges show how much
    the shared machine moved the figures.

Usage
    python bench/tail_sampling_vs_otelcol.py [--seconds 8] [--warmup 3] [--runs 1] [--case status_code|mixed]
        [--baseline SOURCE_TREE]   (e.g. `git archive <commit> | tar -x -C dir`: before and after)
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Status

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.agent import AgentProcess
from tests.helpers.net import free_port
from tests.helpers.otelcol import Otelcol, build

TRACE_SIZES = [10] * 51 + [2]  # 512 spans a request
SPANS_PER_REQUEST = sum(TRACE_SIZES)
SPANS_PER_TRACE = SPANS_PER_REQUEST / len(TRACE_SIZES)
TEMPLATES = 8
TARGET_CPU, BENCH_CPU = 0, 1
DECISION_WAIT = 1.0

CASES: dict[str, list[dict]] = {
    "status_code": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}],
    "mixed": [
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 400}},
        {"name": "ten-percent", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
        {"name": "vip", "type": "string_attribute", "string_attribute": {"key": "customer", "values": ["vip"]}},
        {"name": "budget", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 5_000}},
        {"name": "failed-checkout", "type": "and", "and": {"and_sub_policy": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "checkout", "type": "string_attribute",
             "string_attribute": {"key": "http.route", "values": ["/checkout"]}}]}},
    ],
}
ROUTES = ["/checkout", "/cart", "/products/{id}", "/search", "/login"]


# ---- traffic --------------------------------------------------------------------------------

def template(rng: random.Random) -> tuple[bytes, list[list[int]]]:
    """A request body with placeholder trace ids, and for each trace the offsets of its id."""
    request = ExportTraceServiceRequest()
    group = request.resource_spans.add()
    group.resource.attributes.add(key="service.name").value.string_value = "shop"
    spans = group.scope_spans.add(scope={"name": "bench"}).spans
    start = time.time_ns()
    placeholders = []
    for size in TRACE_SIZES:
        trace_id = rng.randbytes(16)
        placeholders.append(trace_id)
        duration = int(rng.lognormvariate(4.0, 1.0) * 1_000_000)  # median ~55 ms
        error, route = rng.random() < 0.05, rng.choice(ROUTES)
        customer = "vip" if rng.random() < 0.02 else "regular"
        parent = b""
        for index in range(size):
            span = spans.add(trace_id=trace_id, span_id=rng.randbytes(8), parent_span_id=parent,
                             name=f"GET {route}", kind=2 if index == 0 else 3,
                             start_time_unix_nano=start + index * 1000,
                             end_time_unix_nano=start + (duration if index == 0 else index * 2000 + 500))
            parent = parent or span.span_id
            for key, value in (("http.route", route), ("customer", customer), ("http.method", "GET")):
                span.attributes.add(key=key).value.string_value = value
            if error and index == size - 1:
                span.status.code = Status.STATUS_CODE_ERROR
    body = request.SerializeToString()
    offsets = []
    for trace_id in placeholders:
        found, at = [], body.find(trace_id)
        while at >= 0:
            found.append(at)
            at = body.find(trace_id, at + 16)
        offsets.append(found)
    return body, offsets


class Traffic:
    """Request bodies with fresh trace ids each time."""

    def __init__(self, seed: int = 5):
        rng = random.Random(seed)
        self.templates = [template(rng) for _ in range(TEMPLATES)]
        self.next = 0

    def body(self) -> bytes:
        body, offsets = self.templates[self.next % TEMPLATES]
        self.next += 1
        data = bytearray(body)
        fresh = os.urandom(16 * len(offsets))
        for index, places in enumerate(offsets):
            trace_id = fresh[16 * index:16 * index + 16]
            for at in places:
                data[at:at + 16] = trace_id
        return bytes(data)


class Load:
    """Threads posting as fast as the target answers; counts spans answered 200 (and refusals)."""

    def __init__(self, port: int, connections: int):
        self.port, self.connections = port, connections
        self.accepted = self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._post, args=(seed,), daemon=True) for seed in range(connections)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _post(self, seed: int) -> None:
        traffic = Traffic(seed)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/x-protobuf"}
        while not self._stop.is_set():
            try:
                connection.request("POST", "/v1/traces", body=traffic.body(), headers=headers)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                ok = False
            with self._lock:
                if ok:
                    self.accepted += SPANS_PER_REQUEST
                else:
                    self.refused += 1
        connection.close()


# ---- the sink -------------------------------------------------------------------------------

def _sink_main(port: int, counter: Any, ready: Any) -> None:
    os.sched_setaffinity(0, {BENCH_CPU})

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = ExportTraceServiceRequest.FromString(body)
            spans = sum(len(scope.spans) for group in request.resource_spans for scope in group.scope_spans)
            with counter.get_lock():
                counter.value += spans
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.counter = multiprocessing.Value("q", 0)
        ready = multiprocessing.Event()
        self.process = multiprocessing.Process(target=_sink_main, args=(self.port, self.counter, ready), daemon=True)
        self.process.start()
        ready.wait(10)

    @property
    def spans(self) -> int:
        return int(self.counter.value)

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# ---- targets --------------------------------------------------------------------------------

def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def decided_traces(port: int) -> tuple[float, float]:
    """(traces decided not sampled, traces decided sampled) from the processor's own counter."""
    dropped = kept = 0.0
    for key, value in scrape(port).items():
        # the name without _total: otelcol 0.165 exposes it so, edgeagent under both names
        if key.partition("{")[0] == "otelcol_processor_tail_sampling_global_count_traces_sampled":
            if 'sampled="false"' in key:
                dropped += value
            elif 'sampled="true"' in key:
                kept += value
    return dropped, kept


def pipeline(policies: list[dict], exporter: str, sink: Sink, batch: bool) -> dict:
    processors: dict[str, Any] = {"tail_sampling": {"decision_wait": f"{DECISION_WAIT:g}s", "num_traces": 500_000,
                                                    "policies": policies}}
    if batch:
        processors["batch"] = {}
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{free_port()}"}}}},
        "processors": processors,
        "exporters": {exporter: {"endpoint": f"http://127.0.0.1:{sink.port}", "compression": "none"}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": list(processors),
                                             "exporters": [exporter]}}},
    }


def on_target_cpu(start: Callable[[], Any]) -> Any:
    """Start a process that inherits CPU 0 only (this thread goes back to CPU 1 afterwards)."""
    os.sched_setaffinity(0, {TARGET_CPU})
    try:
        return start()
    finally:
        os.sched_setaffinity(0, {BENCH_CPU})


@dataclass
class Running:
    http_port: int
    metrics_port: int
    pid: int
    stop: Callable[[], None]

    def cpu_seconds(self) -> float:
        """User + system CPU of the target process, all its threads."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system


def start_otelcol(policies: list[dict], sink: Sink, workdir: Path) -> Running:
    config = pipeline(policies, "otlp_http", sink, batch=True)
    os.environ["GOMAXPROCS"] = "1"
    try:
        collector = on_target_cpu(lambda: Otelcol(build(), config, workdir).start())
    finally:
        os.environ.pop("GOMAXPROCS", None)
    port = int(config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rpartition(":")[2])
    return Running(port, collector.metrics_port, collector.process.pid, collector.stop)


def start_edgeagent(policies: list[dict], sink: Sink, workdir: Path, source: str = "") -> Running:
    config = pipeline(policies, "otlphttp", sink, batch=False)
    config["extensions"] = {"health_check": {}}
    config["service"]["extensions"] = ["health_check"]
    path = workdir / "edgeagent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    agent = AgentProcess(["run", "--config", str(path), "--state-dir", str(workdir / "state")],
                         env={"PYTHONPATH": source} if source else {}, log_path=str(workdir / "edgeagent.log"))
    agent.args += agent.ports_overrides()
    here = os.getcwd()
    os.chdir(source or here)  # `python -m` looks in the working directory before PYTHONPATH
    try:
        on_target_cpu(agent.start)
    finally:
        os.chdir(here)
    return Running(agent.http_port, agent.metrics_port, agent.process.pid, agent.terminate)


# ---- one measurement ------------------------------------------------------------------------

@dataclass
class Row:
    target: str
    case: str
    accepted: float  # spans/s
    done: float  # spans/s decided and delivered (or dropped by decision)
    cpu: float  # the target's CPU seconds per second of the window (at most 1: one core)
    kept_fraction: float
    undecided: float  # traces accepted but not decided decision_wait + 1 s after the load stopped
    refused: int


def measure(name: str, case: str, starter: Callable, args: argparse.Namespace) -> Row:
    sink = Sink()
    with tempfile.TemporaryDirectory(prefix="ts-vs-otelcol-") as directory:
        target = starter(CASES[case], sink, Path(directory))
        try:
            load = Load(target.http_port, args.connections).start()
            time.sleep(args.warmup)

            def snapshot() -> tuple[float, float, float, float, float]:
                dropped, _ = decided_traces(target.metrics_port)
                return time.perf_counter(), target.cpu_seconds(), load.accepted, dropped, sink.spans
            t0, cpu0, accepted0, dropped0, sunk0 = snapshot()
            time.sleep(args.seconds)
            t1, cpu1, accepted1, dropped1, sunk1 = snapshot()
            load.stop()
            time.sleep(DECISION_WAIT + 1.0)
            dropped, kept = decided_traces(target.metrics_port)
            accepted_traces = load.accepted / SPANS_PER_TRACE
        finally:
            target.stop()
            sink.stop()
    seconds = t1 - t0
    done = ((dropped1 - dropped0) * SPANS_PER_TRACE + (sunk1 - sunk0)) / seconds
    return Row(name, case, (accepted1 - accepted0) / seconds, done, (cpu1 - cpu0) / seconds,
               kept / max(1.0, kept + dropped),
               accepted_traces - (kept + dropped), load.refused)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per target and case")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--case", choices=list(CASES), action="append", help="default: every case")
    parser.add_argument("--only", choices=["edgeagent", "otelcol"], help="one target (no ratio)")
    parser.add_argument("--baseline", metavar="SOURCE_TREE",
                        help="also run edgeagent from this source tree (an earlier commit, say), as `before`")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        print("needs two CPUs: the target on one, load and sink on the other", file=sys.stderr)
        return 1
    os.sched_setaffinity(0, {BENCH_CPU})
    targets = {"otelcol": start_otelcol, "edgeagent": start_edgeagent}
    if args.only:
        targets = {args.only: targets[args.only]}
    if args.baseline:
        targets["before"] = lambda policies, sink, workdir: start_edgeagent(policies, sink, workdir, args.baseline)
    print(f"{'case':12} {'target':10} {'accepted/s':>11} {'done/s':>10} {'cpu':>5} {'acc/cpu-s':>10} "
          f"{'done/cpu-s':>10} {'kept':>6} {'undecided':>9} {'refused':>7}  ratios: accepted, done, done/cpu-s")
    for _ in range(args.runs):
        for case in args.case or list(CASES):
            rows = {name: measure(name, case, starter, args) for name, starter in targets.items()}
            for name, row in rows.items():
                ratio = ""
                if name != "otelcol" and "otelcol" in rows:
                    peer = rows["otelcol"]
                    ratio = (f"{row.accepted / peer.accepted:.2f}x, {row.done / peer.done:.2f}x, "
                             f"{row.done / row.cpu / (peer.done / peer.cpu):.2f}x")
                print(f"{case:12} {name:10} {row.accepted:11,.0f} {row.done:10,.0f} {row.cpu:5.2f} "
                      f"{row.accepted / row.cpu:10,.0f} {row.done / row.cpu:10,.0f} {row.kept_fraction:6.1%} "
                      f"{row.undecided:9,.0f} {row.refused:7}  {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
