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
    the p50 and p99 latency of one request (from wrk's histogram); with --cpu, the target's
    CPU milliseconds per request (user + system of /proc/PID/stat over the measured run) and
    `rq`, the seconds its threads waited for a CPU that something else held, per second of
    the run (/proc/PID/task/*/schedstat): on a shared machine, how much of the point's rate
    was the neighbours'.

    --baseline DIR adds a third target, `before`: edgeagent run from another source tree
    (`git archive <commit> | tar -x -C DIR`), measured at every point right after edgeagent,
    so that the two are compared in paired, interleaved runs. --rounds N repeats the whole
    curve N times and prints every round. The targets run in the opposite order at every other
    point: in runs of the same code as both edgeagent and `before`, whichever ran first at a point
    measured lower (0.76-2.23 of the other, median 0.85).

    The machine may be shared: a figure is one short sample. Re-run the points that matter
    (--connections 1,4) before drawing conclusions.

Usage
    python bench/ingest_curve.py [--connections 1,2,4,8,16,32,64] [--duration 3] [--warmup 1]
                                 [--only edgeagent|otelcol|before] [--loadgen wrk|python]
                                 [--baseline DIR] [--rounds N] [--cpu]
"""

from __future__ import annotations

import argparse
import contextlib
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
BASELINE = "before"

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


def make_target(name: str, workdir: Path, baseline: Path | None = None) -> ingest.Target:
    if name in ("edgeagent", BASELINE):
        target = ingest.make_target("default", workdir)
        if name == BASELINE and baseline is not None:
            target.env["PYTHONPATH"] = str(baseline)
            target.cwd = baseline
        return target
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
    cpu_ms: float = 0.0  # the target's CPU milliseconds per request answered
    queued: float = 0.0  # seconds its threads waited for a CPU, per second of the run


def write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("write_bytes:"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_seconds(pid: int) -> float:
    """Seconds the process's threads have spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError), open(task / "schedstat") as stat:
            total += int(stat.read().split()[1])
    return total / 1e9


def measure(name: str, connections: int, args: argparse.Namespace, bodies: list[Path],
            workdir: Path) -> Point:
    """One point: a fresh target pinned to TARGET_CPU, warm-up, then the measured run."""
    target = make_target(name, workdir, args.baseline)
    busy = [p for p in target.ports if ingest.port_open(p)]
    if busy:
        raise ingest.BenchError(f"port(s) {busy} on 127.0.0.1 already in use")
    log = workdir / f"{name}.log"
    loadgen = ingest.LOADGENS[args.loadgen]
    url = f"http://127.0.0.1:{target.http_port}/v1/traces"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(ingest.pinned(target.cmd, TARGET_CPU), env=target.env,
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=target.cwd or ingest.REPO,
                                start_new_session=True)
    try:
        ingest.wait_ready(target, proc, log)
        loadgen(url, bodies, connections, args.warmup, workdir, LOADGEN_CPU)
        before, cpu_before, queued_before = write_bytes(proc.pid), cpu_seconds(proc.pid), runqueue_seconds(proc.pid)
        result = loadgen(url, bodies, connections, args.duration, workdir, LOADGEN_CPU)
        written = write_bytes(proc.pid) - before
        cpu = cpu_seconds(proc.pid) - cpu_before
        queued = (runqueue_seconds(proc.pid) - queued_before) / result.seconds if result.seconds else 0.0
        if proc.poll() is not None:
            raise ingest.BenchError(f"{name} exited with {proc.returncode}:\n{ingest.tail(log)}")
        accepted = result.ok * sum(body.stat().st_size for body in bodies) / len(bodies)
        return Point(result, written / accepted if accepted else 0.0, cpu * 1e3 / result.ok if result.ok else 0.0,
                     queued)
    finally:
        ingest.stop(proc)


def spans_per_s(point: Point | None) -> float:
    load = point.load if point else None
    return load.ok * ingest.SPANS_PER_REQUEST / load.seconds if load and load.seconds else 0.0


def header(names: list[str], cpu: bool) -> str:
    short = {"edgeagent": "agent", "otelcol": "col", BASELINE: "before"}
    cells = [f"{'conns':>5}"] + [f"{name + '/s':>12}" for name in names]
    cells += [f"{'ratio':>6}"] + ([f"{'before':>6}"] if BASELINE in names else []) + [f"{'refused':>8}"]
    cells += [f"{short[name] + ' wr':>9}" for name in names]
    cells += [f"{short[name] + ' ms/req':>13}" for name in names] if cpu else []
    cells += [f"{short[name] + ' rq':>9}" for name in names] if cpu else []
    cells += [f"{short[name] + ' p50/p99 ms':>17}" for name in names]
    return " ".join(cells)


def print_row(connections: int, names: list[str], results: dict[str, Point | None], cpu: bool) -> None:
    """One line per point; the latency columns only where LATENCY_AT says."""
    rates = {name: spans_per_s(results.get(name)) for name in names}
    cells = [f"{connections:>5}"] + [f"{rates[name]:>12,.0f}" if rates[name] else f"{'-':>12}" for name in names]
    agent, otelcol = rates.get("edgeagent", 0.0), rates.get("otelcol", 0.0)
    cells.append(f"{agent / otelcol:>6.2f}" if agent and otelcol else f"{'-':>6}")
    if BASELINE in names:  # edgeagent / before
        cells.append(f"{agent / rates[BASELINE]:>6.2f}" if agent and rates[BASELINE] else f"{'-':>6}")
    cells.append(f"{sum(p.load.refused + p.load.errors for p in results.values() if p):>8}")
    points = [results.get(name) for name in names]
    cells += [f"{point.written:>9.2f}" if point else f"{'-':>9}" for point in points]
    if cpu:
        cells += [f"{point.cpu_ms:>13.2f}" if point else f"{'-':>13}" for point in points]
        cells += [f"{point.queued:>9.2f}" if point else f"{'-':>9}" for point in points]
    if connections in LATENCY_AT:
        cells += [f"{point.load.p50_ms:>8.1f} {point.load.p99_ms:>8.1f}" if point else f"{'-':>17}"
                  for point in points]
    print(" ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default=",".join(map(str, CONNECTIONS)),
                        help="comma-separated connection counts (default 1,2,4,8,16,32,64)")
    parser.add_argument("--duration", type=int, default=3, help="measured seconds per point (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded seconds per point (default 1)")
    parser.add_argument("--only", choices=(*TARGETS, BASELINE), action="append",
                        help="run only this target (repeatable)")
    parser.add_argument("--loadgen", choices=sorted(ingest.LOADGENS), default="wrk", help="load generator")
    parser.add_argument("--baseline", type=Path, help="also run edgeagent from this source tree, as `before`")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole curve (default 1)")
    parser.add_argument("--cpu", action="store_true", help="print each target's CPU ms per request")
    args = parser.parse_args(argv)
    points = [int(c) for c in args.connections.split(",")]
    if args.duration < 1 or args.warmup < 1 or args.rounds < 1 or min(points) < 1:
        parser.error("--duration, --warmup, --rounds and every connection count must be at least 1")
    names = args.only or ["edgeagent", *([BASELINE] if args.baseline else []), "otelcol"]
    if BASELINE in names and args.baseline is None:
        parser.error(f"--only {BASELINE} needs --baseline DIR")
    failed = False
    with tempfile.TemporaryDirectory(prefix="edgeagent-curve-") as tmp:
        bodies = ingest.write_bodies(Path(tmp))
        print(f"{ingest.SPANS_PER_REQUEST} spans/request, {args.warmup} s warm-up + {args.duration} s per point, "
              f"targets on CPU {TARGET_CPU}, {args.loadgen} on CPU {LOADGEN_CPU}")
        print(header(names, args.cpu), flush=True)
        for index, connections in enumerate(points * args.rounds):
            results: dict[str, Point | None] = {}
            for name in names if index % 2 == 0 else names[::-1]:  # whichever runs first measures lower
                workdir = Path(tmp) / f"{name}-{index}"
                workdir.mkdir()
                try:
                    results[name] = measure(name, connections, args, bodies, workdir)
                except ingest.BenchError as exc:
                    print(f"{name} at {connections} connections: {exc}", file=sys.stderr, flush=True)
                    results[name] = None
                    failed = True
            print_row(connections, names, results, args.cpu)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; started processes stopped", file=sys.stderr)
        sys.exit(130)
