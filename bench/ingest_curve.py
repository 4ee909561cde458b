#!/usr/bin/env python3
"""Durable ingest against the number of client connections: edgeagent and otelcol side by side.

Method
    The 512-span OTLP/HTTP protobuf requests of ingest.py, sent by wrk (closed loop) over
    1, 2, 4, 8, 16, 32 and 64 keep-alive connections. At every point both targets run in
    turn, each started fresh in its own temporary directory, pinned to CPU 1 (`taskset`)
    while wrk runs on CPU 0; a short warm-up is discarded, then --duration seconds are
    measured. Both store every accepted span durably and answer only afterwards:

      edgeagent  `python -m edgeagent run`, the embedded default config (durable queue under
                 $STATE_DIRECTORY, synced commits), no upstream;
      otelcol    otelcol-contrib 0.165 (`python bench/otelcol.py` builds or finds it),
                 GOMAXPROCS=1: otlp receiver → otlphttp exporter whose sending_queue is kept
                 by the file_storage extension with `fsync: true`; the upstream is
                 unreachable, so everything stays queued.

    Printed per point: accepted spans/s of each and their ratio (edgeagent / otelcol), the
    bytes each wrote to disk during the measured run per byte of request accepted (write_bytes
    of /proc/PID/io: flash wear, which group commit keeps low), and at 1 and 4 connections
    the p50 and p99 latency of one request (from wrk's histogram).

    The machine may be shared: a figure is one short sample. Re-run the points that matter
    (--connections 1,4) before drawing conclusions.

Usage
    python bench/ingest_curve.py [--connections 1,2,4,8,16,32,64] [--duration 3] [--warmup 1]
                                 [--only edgeagent|otelcol] [--loadgen wrk|python]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import ingest
from bench.otelcol import binary as otelcol_binary

CONNECTIONS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_AT = (1, 4)
TARGET_CPU = 1
LOADGEN_CPU = 0
OTELCOL_HTTP_PORT = 24318
TARGETS = ("edgeagent", "otelcol")

OTELCOL_CONFIG = """\
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:1
    retry_on_failure:
      max_elapsed_time: 0s
    sending_queue:
      storage: file_storage
      queue_size: 100000000
extensions:
  file_storage:
    directory: {queue}
    fsync: true
service:
  extensions: [file_storage]
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"""


def make_target(name: str, workdir: Path) -> ingest.Target:
    if name == "edgeagent":
        return ingest.make_target("default", workdir)
    queue = workdir / "queue"
    queue.mkdir()
    config = workdir / "otelcol.yaml"
    config.write_text(OTELCOL_CONFIG.format(port=OTELCOL_HTTP_PORT, queue=queue))
    env = dict(os.environ, GOMAXPROCS="1")
    cmd = [str(otelcol_binary()), "--config", str(config)]
    return ingest.Target(name, cmd, env, OTELCOL_HTTP_PORT, None, (OTELCOL_HTTP_PORT,))


@dataclasses.dataclass
class Point:
    load: ingest.LoadResult
    written: float  # bytes written to disk per byte of request accepted


def write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("write_bytes:"))


def measure(name: str, connections: int, args: argparse.Namespace, bodies: list[Path],
            workdir: Path) -> Point:
    """One point: a fresh target pinned to TARGET_CPU, warm-up, then the measured run."""
    target = make_target(name, workdir)
    busy = [p for p in target.ports if ingest.port_open(p)]
    if busy:
        raise ingest.BenchError(f"port(s) {busy} on 127.0.0.1 already in use")
    log = workdir / f"{name}.log"
    loadgen = ingest.LOADGENS[args.loadgen]
    url = f"http://127.0.0.1:{target.http_port}/v1/traces"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(ingest.pinned(target.cmd, TARGET_CPU), env=target.env, cwd=ingest.REPO,
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        ingest.wait_ready(target, proc, log)
        loadgen(url, bodies, connections, args.warmup, workdir, LOADGEN_CPU)
        before = write_bytes(proc.pid)
        result = loadgen(url, bodies, connections, args.duration, workdir, LOADGEN_CPU)
        written = write_bytes(proc.pid) - before
        if proc.poll() is not None:
            raise ingest.BenchError(f"{name} exited with {proc.returncode}:\n{ingest.tail(log)}")
        accepted = result.ok * sum(body.stat().st_size for body in bodies) / len(bodies)
        return Point(result, written / accepted if accepted else 0.0)
    finally:
        ingest.stop(proc)


def spans_per_s(point: Point | None) -> float:
    load = point.load if point else None
    return load.ok * ingest.SPANS_PER_REQUEST / load.seconds if load and load.seconds else 0.0


def print_row(connections: int, results: dict[str, Point | None]) -> None:
    cells = [f"{connections:>5}"]
    for name in TARGETS:
        cells.append(f"{spans_per_s(results.get(name)):>12,.0f}" if results.get(name) else f"{'-':>12}")
    agent, otelcol = (spans_per_s(results.get(name)) for name in TARGETS)
    cells.append(f"{agent / otelcol:>6.2f}" if agent and otelcol else f"{'-':>6}")
    refused = sum(p.load.refused + p.load.errors for p in results.values() if p)
    cells.append(f"{refused:>8}")
    for name in TARGETS:
        point = results.get(name)
        cells.append(f"{point.written:>7.2f}" if point else f"{'-':>7}")
    if connections in LATENCY_AT:
        for name in TARGETS:
            point = results.get(name)
            cells.append(f"{point.load.p50_ms:>7.1f} {point.load.p99_ms:>7.1f}" if point else f"{'-':>15}")
    print(" ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default=",".join(map(str, CONNECTIONS)),
                        help="comma-separated connection counts (default 1,2,4,8,16,32,64)")
    parser.add_argument("--duration", type=int, default=3, help="measured seconds per point (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded seconds per point (default 1)")
    parser.add_argument("--only", choices=TARGETS, action="append", help="run only this target (repeatable)")
    parser.add_argument("--loadgen", choices=sorted(ingest.LOADGENS), default="wrk", help="load generator")
    args = parser.parse_args(argv)
    points = [int(c) for c in args.connections.split(",")]
    if args.duration < 1 or args.warmup < 1 or min(points) < 1:
        parser.error("--duration, --warmup and every connection count must be at least 1")
    names = args.only or TARGETS
    failed = False
    with tempfile.TemporaryDirectory(prefix="edgeagent-curve-") as tmp:
        bodies = ingest.write_bodies(Path(tmp))
        print(f"{ingest.SPANS_PER_REQUEST} spans/request, {args.warmup} s warm-up + {args.duration} s per point, "
              f"targets on CPU {TARGET_CPU}, {args.loadgen} on CPU {LOADGEN_CPU}")
        print(f"{'conns':>5} {'edgeagent/s':>12} {'otelcol/s':>12} {'ratio':>6} {'refused':>8} "
              f"{'agent wr':>7} {'col wr':>7} "
              f"{'agent p50/p99 ms':>15} {'otelcol p50/p99 ms':>15}", flush=True)
        for index, connections in enumerate(points):
            results: dict[str, Point | None] = {}
            for name in names:
                workdir = Path(tmp) / f"{name}-{index}"
                workdir.mkdir()
                try:
                    results[name] = measure(name, connections, args, bodies, workdir)
                except ingest.BenchError as exc:
                    print(f"{name} at {connections} connections: {exc}", file=sys.stderr, flush=True)
                    results[name] = None
                    failed = True
            print_row(connections, results)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; started processes stopped", file=sys.stderr)
        sys.exit(130)
