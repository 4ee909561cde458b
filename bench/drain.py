#!/usr/bin/env python3
"""Backlog drain rate: edgeagent emptying a queue of spans into rotel, over HTTP and gRPC.

Method
    For each exporter (`otlphttp` to rotel's OTLP/HTTP port, `otlp` to its OTLP/gRPC port):

    1. Backlog.  An agent runs with that exporter and an empty endpoint (no upstream:
       everything is buffered) and the embedded default's batch settings.  The script POSTs
       ExportTraceServiceRequest bodies of 512 spans (the bodies of bench/ingest.py) over 4
       keep-alive connections until --spans spans are accepted, waits until the queue holds
       them all (`edgeagent_queue_items`), and stops the agent with SIGTERM.
    2. Drain, once per consumer count (1, then --consumers): a copy of that queue directory,
       rotel started with its blackhole exporter (parses, keeps nothing), and the agent
       started on the copy with the endpoint set to rotel and `sending_queue.num_consumers`
       set.  The clock starts when the agent process is spawned (start-up included) and
       stops when the metrics endpoint shows `otelcol_exporter_sent_spans` = --spans and
       `edgeagent_queue_items` = 0 (every ack committed), polled every 0.2 s.

    Printed per row: wall seconds, spans/s (= spans / wall seconds), the agent's start-up
    seconds (spawn to /health/ready; draining may begin before that), the agent's CPU
    seconds over the whole run (psutil, user + system, all threads) and rotel's.

Usage
    python bench/drain.py [--spans 1000000] [--consumers 10] [--only http|grpc]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import yaml
from ingest import (
    REPO,
    SPANS_PER_REQUEST,
    BenchError,
    build_body,
    find_rotel,
    health_status,
    pinned,
    port_open,
    stop,
    tail,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

LOADERS = 4  # connections that build the backlog
POLL_INTERVAL = 0.2
READY_TIMEOUT = 60.0
BACKLOG_TIMEOUT = 1800.0  # seconds a backlog may take to build
DRAIN_TIMEOUT = 1800.0  # seconds a drain may take
EXPORTERS = {"http": "otlphttp", "grpc": "otlp"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- the agent


@dataclasses.dataclass
class Agent:
    """One `python -m edgeagent run` on free loopback ports, with a config written for it."""

    workdir: Path
    exporter: str
    endpoint: str
    consumers: int = 1
    cpu: int | None = None  # the one CPU it runs on (taskset), or any
    http_port: int = dataclasses.field(default_factory=free_port)
    grpc_port: int = dataclasses.field(default_factory=free_port)
    health_port: int = dataclasses.field(default_factory=free_port)
    metrics_port: int = dataclasses.field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def config(self) -> dict:
        exporter = {"endpoint": self.endpoint, "sending_queue": {"num_consumers": self.consumers,
                                                                 "queue_size": 100_000_000}}
        if self.exporter == "otlp":
            exporter["tls"] = {"insecure": True}
        return {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"},
                                                 "http": {"endpoint": f"127.0.0.1:{self.http_port}"}}}},
            # the embedded default's batch settings: they shape the requests the sender drains
            "processors": {"batch": {"timeout": "1s", "send_batch_size": 8192, "send_batch_max_size": 16384}},
            "exporters": {self.exporter: exporter},
            "extensions": {"health_check": {"endpoint": f"127.0.0.1:{self.health_port}"}},
            "service": {
                "extensions": ["health_check"],
                "telemetry": {"metrics": {"address": f"127.0.0.1:{self.metrics_port}"}},
                "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                         "exporters": [self.exporter]}},
            },
        }

    def start(self) -> Agent:
        path = self.workdir / "agent.yaml"
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        env = {k: v for k, v in os.environ.items() if k != "EDGEAGENT_UPSTREAM"}
        with open(self.workdir / "agent.log", "ab") as log:
            self.proc = subprocess.Popen(
                pinned([sys.executable, "-m", "edgeagent", "run", "--config", str(path), "--state-dir",
                        str(self.workdir / "state")], self.cpu),
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.spawned = time.monotonic()
        deadline = self.spawned + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"agent exited with {self.proc.returncode}:\n{tail(self.workdir / 'agent.log')}")
            if health_status(self.health_port) == 200:
                self.ready = time.monotonic()
                return self
            time.sleep(0.05)
        raise BenchError(f"agent not ready within {READY_TIMEOUT:.0f} s:\n{tail(self.workdir / 'agent.log')}")

    def metric(self, name: str) -> float:
        """Sum of every sample of `name` (this agent has one exporter and one signal)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith((name + " ", name + "{")))

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"agent exited with {self.proc.returncode} while waiting for {what}:\n"
                                 f"{tail(self.workdir / 'agent.log')}")
            if predicate():
                return
            time.sleep(POLL_INTERVAL)
        raise BenchError(f"no {what} within {timeout:.0f} s:\n{tail(self.workdir / 'agent.log')}")

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            if self.proc.returncode not in (0, -15):
                raise BenchError(f"agent exited with {self.proc.returncode} on SIGTERM")


# --------------------------------------------------------------------------- backlog


def bodies(total: int) -> list[bytes]:
    """Request bodies of 512 spans (the last one shorter) adding up to `total` spans; 4 distinct ones reused."""
    rng = random.Random(20240607)
    distinct = [build_body(rng) for _ in range(4)]
    full, rest = divmod(total, SPANS_PER_REQUEST)
    out = [distinct[i % len(distinct)] for i in range(full)]
    if rest:
        request = ExportTraceServiceRequest.FromString(distinct[0])
        del request.resource_spans[0].scope_spans[0].spans[rest:]
        out.append(request.SerializeToString())
    return out


def post_all(port: int, requests: list[bytes]) -> None:
    """POST every body over LOADERS keep-alive connections; 429/503 answers are retried after a pause."""
    errors: list[str] = []
    lock = threading.Lock()
    pending = list(enumerate(requests))

    def next_body() -> bytes | None:
        with lock:
            return pending.pop()[1] if pending and not errors else None

    def loader() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(len(requests)):
                body = next_body()
                if body is None:
                    return
                for _attempt in range(600):
                    connection.request("POST", "/v1/traces", body=body,
                                       headers={"Content-Type": "application/x-protobuf"})
                    response = connection.getresponse()
                    response.read()
                    if response.status == 200:
                        break
                    if response.status not in (429, 503):
                        raise BenchError(f"agent answered {response.status} while building the backlog")
                    time.sleep(0.1)
                else:
                    raise BenchError("agent kept refusing the backlog for a minute")
        except (BenchError, OSError) as exc:
            with lock:
                errors.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=loader, daemon=True) for _ in range(LOADERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BACKLOG_TIMEOUT)
    if errors or any(thread.is_alive() for thread in threads):
        raise BenchError(f"building the backlog failed: {errors[:1] or 'timed out'}")


def build_backlog(workdir: Path, exporter: str, spans: int) -> float:
    """A queue directory under workdir/state holding `spans` spans for `exporter`; returns seconds taken."""
    started = time.monotonic()
    agent = Agent(workdir, exporter, endpoint="").start()
    try:
        fill(agent, spans)
    finally:
        agent.stop()
    return time.monotonic() - started


def fill(agent: Agent, spans: int) -> float:
    """POST `spans` spans to a running agent with no upstream; seconds until its queue holds them all."""
    requests = bodies(spans)
    started = time.monotonic()
    post_all(agent.http_port, requests)
    agent.wait_for(lambda: agent.metric("edgeagent_queue_items") >= spans, 120, "complete backlog")
    seconds = time.monotonic() - started
    queued = agent.metric("edgeagent_queue_items")
    if queued != spans:
        raise BenchError(f"queue holds {queued:.0f} spans, expected {spans}")
    return seconds


# --------------------------------------------------------------------------- drain


@dataclasses.dataclass
class Row:
    protocol: str
    consumers: int
    spans: int
    wall: float = 0.0
    startup: float = 0.0
    agent_cpu: float = 0.0
    rotel_cpu: float = 0.0
    error: str = ""


def start_rotel(workdir: Path) -> tuple[subprocess.Popen, int, int]:
    grpc_port, http_port = free_port(), free_port()
    with open(workdir / "rotel.log", "ab") as log:
        proc = subprocess.Popen(
            [find_rotel(), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
             "--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--otlp-grpc-max-recv-msg-size-mib", "256",
             "--exporter", "blackhole", "--pid-file", str(workdir / "rotel.pid"),
             "--log-file", str(workdir / "rotel-daemon.log")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while not (port_open(grpc_port) and port_open(http_port)):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise BenchError(f"rotel did not start:\n{tail(workdir / 'rotel.log')}")
        time.sleep(0.05)
    return proc, grpc_port, http_port


def drain(backlog: Path, workdir: Path, protocol: str, consumers: int, spans: int) -> Row:
    shutil.copytree(backlog / "state", workdir / "state")
    row = Row(protocol, consumers, spans)
    rotel, grpc_port, http_port = start_rotel(workdir)
    agent = None
    try:
        endpoint = f"http://127.0.0.1:{http_port}" if protocol == "http" else f"127.0.0.1:{grpc_port}"
        agent = Agent(workdir, EXPORTERS[protocol], endpoint, consumers).start()
        agent.wait_for(lambda: agent.metric("otelcol_exporter_sent_spans") >= spans
                       and agent.metric("edgeagent_queue_items") == 0, DRAIN_TIMEOUT, "empty queue")
        row.wall = time.monotonic() - agent.spawned
        row.startup = agent.ready - agent.spawned
        row.agent_cpu = agent.cpu_seconds()
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(rotel.pid).cpu_times()
            row.rotel_cpu = times.user + times.system
        failed = agent.metric("otelcol_exporter_send_failed_spans")
        if failed:
            row.error = f"{failed:.0f} spans failed to send at least once"
    finally:
        if agent is not None:
            agent.stop()
        stop(rotel)
    shutil.rmtree(workdir / "state")
    return row


def print_table(rows: list[Row]) -> None:
    header = (f"{'exporter':<9} {'consumers':>9} {'spans':>10} {'wall s':>7} {'spans/s':>9} {'startup s':>9} "
              f"{'agent CPU s':>11} {'rotel CPU s':>11}")
    print(header)
    print("-" * len(header))
    for row in rows:
        name = f"{EXPORTERS[row.protocol]}"
        if not row.wall:
            print(f"{name:<9} {row.consumers:>9} failed: {row.error.splitlines()[0] if row.error else '?'}")
            continue
        print(f"{name:<9} {row.consumers:>9} {row.spans:>10,} {row.wall:>7.1f} {row.spans / row.wall:>9,.0f} "
              f"{row.startup:>9.1f} {row.agent_cpu:>11.1f} {row.rotel_cpu:>11.1f}"
              + (f"  ({row.error})" if row.error else ""))


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=count, default=1_000_000, help="backlog size in spans (default 1000000)")
    parser.add_argument("--consumers", type=count, default=10, help="the larger num_consumers (default 10)")
    parser.add_argument("--only", choices=sorted(EXPORTERS), action="append", help="one protocol (repeatable)")
    args = parser.parse_args(argv)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgeagent-drain-") as tmp:
        print(f"{args.spans:,} spans in requests of {SPANS_PER_REQUEST}, batch 8192..16384 spans per upstream "
              f"request, consumers 1 and {args.consumers}, {psutil.cpu_count()} CPUs", flush=True)
        for protocol in args.only or EXPORTERS:
            backlog = Path(tmp) / f"backlog-{protocol}"
            backlog.mkdir()
            try:
                seconds = build_backlog(backlog, EXPORTERS[protocol], args.spans)
            except BenchError as exc:
                print(f"{protocol}: {exc}", file=sys.stderr, flush=True)
                rows += [Row(protocol, n, args.spans, error=str(exc)) for n in sorted({1, args.consumers})]
                continue
            print(f"{EXPORTERS[protocol]}: backlog of {args.spans:,} spans built in {seconds:.1f} s", flush=True)
            for consumers in sorted({1, args.consumers}):
                workdir = Path(tmp) / f"drain-{protocol}-{consumers}"
                workdir.mkdir()
                print(f"draining over {protocol} with {consumers} consumer(s) ...", flush=True)
                try:
                    rows.append(drain(backlog, workdir, protocol, consumers, args.spans))
                except BenchError as exc:
                    print(f"{protocol}/{consumers}: {exc}", file=sys.stderr, flush=True)
                    rows.append(Row(protocol, consumers, args.spans, error=str(exc)))
            shutil.rmtree(backlog)
    print()
    print_table(rows)
    return 1 if any(not row.wall for row in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; started processes stopped", file=sys.stderr)
        sys.exit(130)
