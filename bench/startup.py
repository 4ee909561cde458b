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
    when allowed (`sync; echo 3 > /proc/sys/vm/drop_caches`), and start-up is timed the same way.

Usage
    python bench/startup.py [--runs 5] [--idle 3] [--backlog-gib 1] [--record-kib 1]
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
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

POLL = 0.005
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def boot(state: Path, log: Path, pycache: Path) -> tuple[subprocess.Popen, float, float]:
    """Start the agent; return it, wall seconds and CPU seconds to ready."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEAGENT_UPSTREAM", "PYTHONDONTWRITEBYTECODE")}
    env.update(STATE_DIRECTORY=str(state), PYTHONPYCACHEPREFIX=str(pycache))
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edgeagent", "run"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ingest.REPO)
    for _ in range(int(ingest.READY_TIMEOUT / POLL)):
        if proc.poll() is not None:
            raise ingest.BenchError(f"agent exited with {proc.returncode}:\n{ingest.tail(log)}")
        if ingest.health_status(ingest.AGENT_HEALTH_PORT) == 200:
            return proc, time.monotonic() - started, cpu_seconds(proc.pid)
        time.sleep(POLL)
    ingest.stop(proc)
    raise ingest.BenchError(f"agent not ready in {ingest.READY_TIMEOUT:.0f} s:\n{ingest.tail(log)}")


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
    args = parser.parse_args()
    busy = [p for p in (ingest.AGENT_HTTP_PORT, ingest.AGENT_GRPC_PORT, ingest.AGENT_HEALTH_PORT)
            if ingest.port_open(p)]
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
                time.sleep(args.idle)
                print(f"idle RssAnon after {args.idle:g} s: {ingest.rss_anon_bytes(proc.pid) / 2**20:.1f} MiB")
            ingest.stop(proc)
        report("empty queue", samples)
        if args.backlog_gib:
            state = work / "backlog"
            records = asyncio.run(fill(state / "queue", args.backlog_gib, args.record_kib))
            size = (state / "queue" / "data.mdb").stat().st_size
            samples = []
            for _ in range(args.runs):
                dropped = subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"],
                                         capture_output=True).returncode == 0
                proc, wall, cpu = boot(state, work / "agent.log", work / "pycache")
                samples.append((wall, cpu))
                ingest.stop(proc)
            cache = "page cache dropped" if dropped else "page cache NOT dropped"
            report(f"{records:,} records of {args.record_kib} KiB, {size / 2**30:.2f} GiB file, {cache}", samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
