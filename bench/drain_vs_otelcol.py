#!/usr/bin/env python3
"""Backlog drain and disk per queued span: edgeagent and otelcol 0.165 in the same run.

Method
    Per round, for each target in turn (the order alternates from round to round):

    1. Backlog.  The target runs pinned to CPU 1 (`taskset`; otelcol also with GOMAXPROCS=1)
       with its upstream absent, and this script POSTs --spans spans in the 512-span
       OTLP/HTTP protobuf requests of ingest.py over 4 keep-alive connections from CPU 0
       (drain.py's loader). Both answer only once a request is stored, so spans over the
       seconds from the first POST to the last answer is the durable ingest rate.

         edgeagent  `edgeagent run` with drain.py's config: the embedded default's batch
                    settings, otlphttp with an empty endpoint (buffer only), 4 consumers
                    (the default's num_consumers), the durable queue under its state dir;
         otelcol    otlp receiver -> otlphttp exporter to a closed loopback port, its
                    sending_queue kept by file_storage with `fsync: true`, queue_size far
                    above the backlog (counted in requests, the default sizer), retry
                    without an end (max_elapsed_time 0): a request that fails is retried
                    in place and, on shutdown, left in the storage for the next start.

       The target is then stopped with SIGTERM and must exit cleanly. The bytes of its queue
       directory are summed: allocated (st_blocks x 512) and apparent (st_size), each divided
       by --spans; for edgeagent also the LMDB pages in use (edgeagent_queue_storage_bytes).
    2. Drain.  A counting sink starts on CPU 0: otelcol with an otlp receiver and the nop
       exporter, GOMAXPROCS=1; it counts with its own otelcol_receiver_accepted_spans. The
       target starts again on the same storage, pinned to CPU 1, its exporter pointing at the
       sink. The clock runs from the target's spawn (start-up included) until the sink has
       counted --spans spans (for edgeagent also until edgeagent_queue_items is 0), polled
       every 0.1 s. One second later the sink's count must still be exactly --spans: a lost
       or a duplicated span fails the run. CPU seconds are user + system of the whole target
       process (all threads) and of the sink, read at that moment.

    Printed per round and target: ingest spans/s and spans per CPU second of the target while
    it took them; bytes per span on disk (allocated, apparent, in use); drain seconds, of
    them start-up (spawn to ready), spans/s, the target's CPU seconds and spans per CPU
    second; `waited s`, the seconds the target's threads were runnable but not running
    (/proc/PID/task/*/schedstat, summed over threads: other work on the shared machine, or
    the target's own threads on its one CPU); the sink's CPU seconds. Then the ratios the
    targets are read against: drain edgeagent / otelcol, disk edgeagent / otelcol,
    edgeagent's drain / its own ingest (in spans/s, and in spans per CPU second, which other
    work on the machine moves less), and CPU per span edgeagent / otelcol. The load average
    is printed with every round.

Usage
    python bench/drain_vs_otelcol.py [--spans 1000000] [--rounds 1] [--only edgeagent|otelcol] [--timeout 900]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import drain  # noqa: E402  (the agent, the backlog bodies and their loader)
import ingest  # noqa: E402
import ingest_curve  # noqa: E402  (the run-queue wait of a process)

from tests.helpers.otelcol import Otelcol, OtelcolUnavailable, build  # noqa: E402

TARGET_CPU = 1
SINK_CPU = 0  # the sink, this script and its loaders
CONSUMERS = 4  # the embedded default's sending_queue.num_consumers
CLOSED = "http://127.0.0.1:1"  # nothing listens there: connections are refused
POLL = 0.1
SETTLE = 1.0  # seconds after the last span in which nothing more may arrive
TARGETS = ("edgeagent", "otelcol")


@contextlib.contextmanager
def on_cpu(cpu: int, **env: str) -> Iterator[None]:
    """Processes started inside run on `cpu` alone, with `env` added: they inherit this thread's
    affinity and the environment."""
    affinity = os.sched_getaffinity(0)
    saved = {key: os.environ.get(key) for key in env}
    os.sched_setaffinity(0, {cpu})
    os.environ.update(env)
    try:
        yield
    finally:
        os.sched_setaffinity(0, affinity)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_pinned(collector: Otelcol, cpu: int) -> None:
    """Start otelcol on `cpu` alone with GOMAXPROCS=1; stopped again if it does not become ready."""
    try:
        with on_cpu(cpu, GOMAXPROCS="1"):
            collector.start()
    except RuntimeError as exc:
        collector.stop()
        raise ingest.BenchError(str(exc)) from exc


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def otelcol_config(http_port: int, endpoint: str, queue: Path) -> dict:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "exporters": {"otlphttp": {
            "endpoint": endpoint,
            "retry_on_failure": {"enabled": True, "max_elapsed_time": "0s"},
            "sending_queue": {"storage": "file_storage", "sizer": "requests", "queue_size": 100_000_000},
        }},
        "extensions": {"file_storage": {"directory": str(queue), "fsync": True}},
        "service": {"extensions": ["file_storage"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}}},
    }


@dataclasses.dataclass
class Result:
    target: str
    spans: int
    ingest_s: float = 0.0
    ingest_cpu: float = 0.0  # the target's CPU seconds while it took the backlog
    allocated: int = 0  # bytes of the queue directory after the backlog: st_blocks x 512
    apparent: int = 0  # and st_size
    in_use: float = 0.0  # edgeagent: LMDB pages in use
    drain_s: float = 0.0
    startup_s: float = 0.0  # of drain_s: spawn to ready
    cpu: float = 0.0  # the target's CPU seconds over the drain run
    waited: float = 0.0  # seconds its threads were runnable but not running
    sink_cpu: float = 0.0

    def per_span(self, size: float) -> float:
        return size / self.spans


class Sink:
    """otelcol with an otlp receiver and the nop exporter, on SINK_CPU: counts what it accepts."""

    def __init__(self, workdir: Path) -> None:
        self.port = drain.free_port()
        config = {"receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{self.port}"}}}},
                  "exporters": {"nop": {}},
                  "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["nop"]}}}}
        workdir.mkdir()
        self.collector = Otelcol(build(), config, workdir)

    def __enter__(self) -> Sink:
        start_pinned(self.collector, SINK_CPU)
        return self

    def __exit__(self, *exc: object) -> None:
        self.collector.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> int:
        return int(self.collector.metric("otelcol_receiver_accepted_spans"))

    def cpu(self) -> float:
        assert self.collector.process is not None
        return cpu_seconds(self.collector.process.pid)


def wait_delivered(sink: Sink, spans: int, alive: Callable[[], bool], done: Callable[[], bool],
                   timeout: float, name: str) -> None:
    """Until the sink has every span and `done()` holds; fails on exit, timeout, or a count past `spans`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ingest.BenchError(f"{name} exited during the drain")
        counted = sink.spans()
        if counted > spans:
            raise ingest.BenchError(f"the sink counted {counted} spans from {name}, {counted - spans} more than queued")
        if counted == spans and done():
            return
        time.sleep(POLL)
    raise ingest.BenchError(f"{name}: the sink counted {sink.spans()} of {spans} spans within {timeout:.0f} s")


def check_settled(sink: Sink, spans: int, name: str) -> None:
    time.sleep(SETTLE)
    counted = sink.spans()
    if counted != spans:
        raise ingest.BenchError(f"{name}: the sink counted {counted} spans, {spans} were queued")


def footprint(result: Result, directory: Path) -> None:
    result.allocated = ingest.disk_bytes(directory)
    result.apparent = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


# --------------------------------------------------------------------------- edgeagent


def run_edgeagent(workdir: Path, spans: int, timeout: float) -> Result:
    result = Result("edgeagent", spans)
    agent = drain.Agent(workdir, "otlphttp", endpoint="", consumers=CONSUMERS, cpu=TARGET_CPU).start()
    try:
        cpu = agent.cpu_seconds()
        result.ingest_s = drain.fill(agent, spans)
        result.ingest_cpu = agent.cpu_seconds() - cpu
        result.in_use = agent.metric("edgeagent_queue_storage_bytes")
    finally:
        agent.stop()
    footprint(result, workdir / "state")
    with Sink(workdir / "sink") as sink:
        agent = drain.Agent(workdir, "otlphttp", sink.endpoint, consumers=CONSUMERS, cpu=TARGET_CPU)
        try:
            agent.start()
            assert agent.proc is not None
            proc = agent.proc
            wait_delivered(sink, spans, lambda: proc.poll() is None,
                           lambda: agent.metric("edgeagent_queue_items") == 0, timeout, "edgeagent")
            result.drain_s, result.startup_s = time.monotonic() - agent.spawned, agent.ready - agent.spawned
            result.cpu, result.sink_cpu = agent.cpu_seconds(), sink.cpu()
            result.waited = ingest_curve.runqueue_seconds(proc.pid)
            check_settled(sink, spans, "edgeagent")
        finally:
            agent.stop()
    return result


# --------------------------------------------------------------------------- otelcol


def start_otelcol(workdir: Path, endpoint: str) -> tuple[Otelcol, int]:
    http_port = drain.free_port()
    collector = Otelcol(build(), otelcol_config(http_port, endpoint, workdir / "queue"), workdir)
    start_pinned(collector, TARGET_CPU)
    return collector, http_port


def stop_otelcol(collector: Otelcol) -> None:
    collector.stop()
    assert collector.process is not None
    if collector.process.returncode != 0:
        raise ingest.BenchError(f"otelcol exited with {collector.process.returncode} on SIGTERM:\n{collector.log()}")


def run_otelcol(workdir: Path, spans: int, timeout: float) -> Result:
    result = Result("otelcol", spans)
    (workdir / "queue").mkdir()
    collector, http_port = start_otelcol(workdir, CLOSED)
    try:
        requests = drain.bodies(spans)
        assert collector.process is not None
        started, cpu = time.monotonic(), cpu_seconds(collector.process.pid)
        drain.post_all(http_port, requests)
        result.ingest_s = time.monotonic() - started
        result.ingest_cpu = cpu_seconds(collector.process.pid) - cpu
        accepted = collector.metric("otelcol_receiver_accepted_spans")
        failed = collector.metric("otelcol_exporter_enqueue_failed_spans")
        if accepted != spans or failed:
            raise ingest.BenchError(f"otelcol accepted {accepted:.0f} of {spans} spans, {failed:.0f} not queued")
    finally:
        stop_otelcol(collector)
    footprint(result, workdir / "queue")
    with Sink(workdir / "sink") as sink:
        spawned = time.monotonic()
        collector, _ = start_otelcol(workdir, sink.endpoint)
        result.startup_s = time.monotonic() - spawned
        try:
            assert collector.process is not None
            proc = collector.process
            wait_delivered(sink, spans, lambda: proc.poll() is None, lambda: True, timeout, "otelcol")
            result.drain_s = time.monotonic() - spawned
            result.cpu, result.sink_cpu = cpu_seconds(proc.pid), sink.cpu()
            result.waited = ingest_curve.runqueue_seconds(proc.pid)
            check_settled(sink, spans, "otelcol")
        finally:
            stop_otelcol(collector)
    return result


RUNS: dict[str, Callable[[Path, int, float], Result]] = {"edgeagent": run_edgeagent, "otelcol": run_otelcol}


# --------------------------------------------------------------------------- report


# (heading, width, cell of a result): one column of the table
COLUMNS: list[tuple[str, int, Callable[[Result], str]]] = [
    ("ingest/s", 9, lambda r: f"{r.spans / r.ingest_s:,.0f}"),
    ("/CPU s", 8, lambda r: f"{r.spans / r.ingest_cpu:,.0f}"),
    ("disk B/span", 11, lambda r: f"{r.per_span(r.allocated):.1f}"),
    ("apparent", 8, lambda r: f"{r.per_span(r.apparent):.1f}"),
    ("in use", 6, lambda r: f"{r.per_span(r.in_use):.1f}" if r.in_use else "-"),
    ("drain s", 7, lambda r: f"{r.drain_s:.2f}"),
    ("start s", 7, lambda r: f"{r.startup_s:.2f}"),
    ("drain/s", 8, lambda r: f"{r.spans / r.drain_s:,.0f}"),
    ("CPU s", 6, lambda r: f"{r.cpu:.2f}"),
    ("/CPU s", 8, lambda r: f"{r.spans / r.cpu:,.0f}"),
    ("waited s", 8, lambda r: f"{r.waited:.2f}"),
    ("sink CPU s", 10, lambda r: f"{r.sink_cpu:.2f}"),
]
HEADER = " ".join([f"{'target':<10}", *(f"{heading:>{width}}" for heading, width, _ in COLUMNS)])


def print_result(result: Result) -> None:
    cells = [f"{result.target:<10}", *(f"{cell(result):>{width}}" for _, width, cell in COLUMNS)]
    print(" ".join(cells), flush=True)


def ratios(results: dict[str, Result]) -> dict[str, float]:
    agent, otelcol = results.get("edgeagent"), results.get("otelcol")
    out: dict[str, float] = {}
    if agent:
        out["drain / own ingest"] = agent.ingest_s / agent.drain_s
        out["per CPU s, drain / ingest"] = agent.ingest_cpu / agent.cpu
    if agent and otelcol:
        out["drain vs otelcol"] = otelcol.drain_s / agent.drain_s
        out["disk vs otelcol"] = agent.allocated / otelcol.allocated
        out["CPU per span vs otelcol"] = agent.cpu / otelcol.cpu
    return out


def print_summary(rounds: list[dict[str, float]]) -> None:
    print("\nedgeagent against the targets, over the rounds (min / median / max):")
    goals = {"drain vs otelcol": ">= 3", "drain / own ingest": ">= 0.8", "disk vs otelcol": "<= 0.25",
             "per CPU s, drain / ingest": "", "CPU per span vs otelcol": ""}
    for name, goal in goals.items():
        values = [r[name] for r in rounds if name in r]
        if values:
            print(f"  {name:<26} {min(values):6.2f} / {statistics.median(values):6.2f} / {max(values):6.2f}"
                  + (f"   (target {goal})" if goal else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=drain.count, default=1_000_000, help="backlog in spans (default 1000000)")
    parser.add_argument("--rounds", type=drain.count, default=1, help="repeat, alternating the order (default 1)")
    parser.add_argument("--only", choices=TARGETS, action="append", help="one target (repeatable)")
    parser.add_argument("--timeout", type=drain.count, default=900, help="seconds a drain may take (default 900)")
    args = parser.parse_args(argv)
    names = args.only or list(TARGETS)
    try:
        build()
    except OtelcolUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    os.sched_setaffinity(0, {SINK_CPU})  # the loaders and the polling stay off the target's CPU
    print(f"{args.spans:,} spans in requests of {ingest.SPANS_PER_REQUEST}; targets on CPU {TARGET_CPU}, "
          f"sink and load on CPU {SINK_CPU}; bytes per span on disk: allocated, apparent, LMDB pages in use")
    summary: list[dict[str, float]] = []
    failed = False
    for index in range(args.rounds):
        print(f"\nround {index + 1}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(HEADER, flush=True)
        results: dict[str, Result] = {}
        for name in names if index % 2 == 0 else names[::-1]:
            with tempfile.TemporaryDirectory(prefix=f"drain-vs-otelcol-{name}-") as tmp:
                try:
                    results[name] = RUNS[name](Path(tmp), args.spans, args.timeout)
                except ingest.BenchError as exc:
                    print(f"{name}: {exc}", file=sys.stderr, flush=True)
                    failed = True
                    continue
            print_result(results[name])
        summary.append(ratios(results))
        print("  ".join(f"{key} {value:.2f}" for key, value in summary[-1].items()), flush=True)
    print_summary(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; started processes stopped", file=sys.stderr)
        sys.exit(130)
