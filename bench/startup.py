#!/usr/bin/env python3
"""Start-up to ready and idle memory of `edgeagent run` with the embedded default config.

Method
    `python -m edgeagent run` (default config; its ports must be free) is started --runs
    times with an empty state directory (after one unmeasured start that writes the bytecode
    cache, kept in a temporary directory, as an installed package has it) and timed from exec to
    /health/ready answering 200;
    the process's CPU seconds at that moment are read from /proc (less disturbed by other
    load on a shared machine than the wall time). The last run then idles --idle seconds and
    its RssAnon (anonymous memory: the queue's memory map is not counted) is read.

    With --backlog-gib, a state directory is first filled through the queue store with that
    much of incompressible records of --record-kib each (small records fill LMDB's leaf pages,
    so a start-up that walked every key would read the whole file), the page cache is dropped
    when allowed (`sync; echo 3 > /proc/sys/vm/drop_caches`), and start-up is timed the same way;
    the last run's RssAnon is read after the same idle pause.

    With --otelcol, otelcol-contrib 0.165 (`python bench/otelcol.py` builds it) is timed the same
    way with the same pipelines (otlp receiver, memory_limiter, batch, otlphttp exporter with a
    file_storage queue, health_check, Prometheus self-metrics), on ports 2xxxx, for comparison.

    The agent's ports are its defaults; where other work holds them, run it in a network namespace
    of its own: `unshare -n sh -c 'ip link set lo up; python bench/startup.py'` (as root).

Usage
    python bench/startup.py [--runs 5] [--idle 3] [--backlog-gib 1] [--record-kib 1] [--otelcol]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import ingest
from bench.otelcol import binary as otelcol_binary
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

POLL = 0.005
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


OTELCOL_PORTS = {"grpc": 24317, "http": 24318, "health": 23133, "metrics": 28888}
OTELCOL_CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http:
        endpoint: 127.0.0.1:{http}
processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: 512
    spike_limit_mib: 128
  batch:
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:1
    compression: gzip
    retry_on_failure:
      max_elapsed_time: 0s
    sending_queue:
      storage: file_storage
      num_consumers: 4
      queue_size: 1000000
extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
  file_storage:
    directory: {queue}
service:
  extensions: [health_check, file_storage]
  telemetry:
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: {metrics}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlphttp]
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlphttp]
    logs:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlphttp]
"""


def boot(state: Path, log: Path, pycache: Path) -> tuple[subprocess.Popen, float, float]:
    """Start the agent; return it, wall seconds and CPU seconds to ready."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEAGENT_UPSTREAM", "PYTHONDONTWRITEBYTECODE")}
    env.update(STATE_DIRECTORY=str(state), PYTHONPYCACHEPREFIX=str(pycache))
    return wait_ready([sys.executable, "-m", "edgeagent", "run"], env, log, ingest.AGENT_HEALTH_PORT)


def boot_otelcol(state: Path, log: Path) -> tuple[subprocess.Popen, float, float]:
    (state / "queue").mkdir(parents=True, exist_ok=True)
    config = state / "otelcol.yaml"
    config.write_text(OTELCOL_CONFIG.format(queue=state / "queue", **OTELCOL_PORTS))
    return wait_ready([str(otelcol_binary()), "--config", str(config)], dict(os.environ), log,
                      OTELCOL_PORTS["health"])


def wait_ready(cmd: list[str], env: dict[str, str], log: Path,
               health_port: int) -> tuple[subprocess.Popen, float, float]:
    """Start `cmd`; return it, wall seconds and CPU seconds to its health check answering 200."""
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=ingest.REPO)
    for _ in range(int(ingest.READY_TIMEOUT / POLL)):
        if proc.poll() is not None:
            raise ingest.BenchError(f"{cmd[0]} exited with {proc.returncode}:\n{ingest.tail(log)}")
        if ingest.health_status(health_port) == 200:
            return proc, time.monotonic() - started, cpu_seconds(proc.pid)
        time.sleep(POLL)
    ingest.stop(proc)
    raise ingest.BenchError(f"{cmd[0]} not ready in {ingest.READY_TIMEOUT:.0f} s:\n{ingest.tail(log)}")


def idle_rss(proc: subprocess.Popen, idle: float) -> str:
    time.sleep(idle)
    return f"RssAnon after {idle:g} s idle: {ingest.rss_anon_bytes(proc.pid) / 2**20:.1f} MiB"


async def fill(directory: Path, gib: float, record_kib: int) -> int:
    """Write the backlog through the queue store, unsynced, in large commits."""
    store = QueueStore(str(directory), sync=False)
    store.open()
    store.start()
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    body = os.urandom(record_kib << 10)
    count = int(gib * (1 << 20)) // record_kib
    for start in range(0, count, 1024):
        await asyncio.gather(*(store.put([queue], body, 1, Signal.TRACES) for _ in range(min(1024, count - start))))
    await store.close()
    return count


def report(label: str, samples: list[tuple[float, float]]) -> None:
    walls, cpus = [w for w, _ in samples], [c for _, c in samples]
    print(f"{label}: ready in {min(walls):.3f} / {statistics.median(walls):.3f} s (min / median of {len(walls)}), "
          f"CPU {min(cpus):.2f} / {statistics.median(cpus):.2f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds idle before RssAnon is read")
    parser.add_argument("--backlog-gib", type=float, default=0.0)
    parser.add_argument("--record-kib", type=int, default=1)
    parser.add_argument("--otelcol", action="store_true", help="time otelcol-contrib 0.165 the same way")
    args = parser.parse_args()
    ports = [ingest.AGENT_HTTP_PORT, ingest.AGENT_GRPC_PORT, ingest.AGENT_HEALTH_PORT, 8888]
    busy = [p for p in ports + (list(OTELCOL_PORTS.values()) if args.otelcol else []) if ingest.port_open(p)]
    if busy:
        print(f"port(s) {busy} on 127.0.0.1 already in use", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="edgeagent-startup-") as tmp:
        work = Path(tmp)
        (work / "warm").mkdir()
        ingest.stop(boot(work / "warm", work / "agent.log", work / "pycache")[0])
        samples = []
        for run in range(args.runs):
            state = work / f"empty-{run}"
            state.mkdir()
            proc, wall, cpu = boot(state, work / "agent.log", work / "pycache")
            samples.append((wall, cpu))
            if run == args.runs - 1:
                print(f"empty queue: {idle_rss(proc, args.idle)}")
            ingest.stop(proc)
        report("empty queue", samples)
        if args.otelcol:
            samples = []
            for run in range(args.runs):
                proc, wall, cpu = boot_otelcol(work / f"otelcol-{run}", work / "otelcol.log")
                samples.append((wall, cpu))
                if run == args.runs - 1:
                    print(f"otelcol, empty queue: {idle_rss(proc, args.idle)}")
                ingest.stop(proc)
            report("otelcol, empty queue", samples)
        if args.backlog_gib:
            state = work / "backlog"
            records = asyncio.run(fill(state / "queue", args.backlog_gib, args.record_kib))
            size = (state / "queue" / "data.mdb").stat().st_size
            samples = []
            for run in range(args.runs):
                dropped = subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"],
                                         capture_output=True).returncode == 0
                proc, wall, cpu = boot(state, work / "agent.log", work / "pycache")
                samples.append((wall, cpu))
                if run == args.runs - 1:
                    print(f"backlog: {idle_rss(proc, args.idle)}")
                ingest.stop(proc)
            cache = "page cache dropped" if dropped else "page cache NOT dropped"
            report(f"{records:,} records of {args.record_kib} KiB, {size / 2**30:.2f} GiB file, {cache}", samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
