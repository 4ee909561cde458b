#!/usr/bin/env python3
"""Durable ingest throughput: edgeagent versus rotel, over OTLP/HTTP protobuf.

Method
    A few realistic ExportTraceServiceRequest bodies (one resource with
    service.name, one scope, 512 SERVER spans with random ids and 8 string
    attributes each) are built once and written to temporary files.  The load
    generator POSTs them in rotation to http://127.0.0.1:PORT/v1/traces over N
    keep-alive connections (default 16), each connection sending its next
    request as soon as the previous answer arrived: a closed loop, so the
    target's acceptance rate sets the pace.  A 2 s warm-up run is discarded,
    then a measured run of --duration seconds follows.

    Accepted spans = 512 x (2xx answers in the measured run); 429/503 answers
    are counted as refusals, anything else (other status, socket errors,
    timeouts) as errors.

    Targets, one at a time, each started fresh in its own temporary directory:
      default  `python -m edgeagent run` with the embedded config, queue under
               $STATE_DIRECTORY, no upstream: every span is stored durably;
      edge     `python -m edgeagent run --config` with a copy of the Edge
               Buffering seed config (queue directory moved to a temporary
               directory, listeners on 127.0.0.1, upstream http://127.0.0.1:1,
               which refuses connections: upstream down, everything buffered);
      rotel    the rotel collector (`pip install rotel`, binary rotel-agent)
               with its blackhole exporter: it parses and drops, keeps nothing.

    While the measured run goes on, the target process and its children are
    sampled with psutil: CPU seconds over the window divided by wall seconds
    (= cores used; divided by requests/s it is "CPU ms/req"), and RssAnon from /proc/PID/status (anonymous memory,
    so the
    page cache of memory-mapped queue files is not counted): peak and end.
    "disk MiB" is what the target's temporary directory holds at the end
    (queue files, warm-up included): a check that accepted spans were written.

Why the load generator is not the bottleneck
    The default generator is wrk (C, epoll; `apt-get install -y wrk`) with a
    small Lua script that pre-formats the requests once, so each request costs
    one write of a ready buffer.  Its own CPU time over the measured run (from
    the kernel's rusage of the reaped child) is printed as "loadgen cores".
    With 2 cores in total, a generator using a small fraction of one core while
    the target saturates its share shows the target sets the rate.  A pure
    Python generator (aiohttp, --loadgen python) is kept as a fallback for
    machines without wrk; it spends several times more CPU per request.

Usage
    python bench/ingest.py [--only rotel|default|edge] [--duration 10]
                           [--connections 16] [--loadgen wrk|python]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

REPO = Path(__file__).resolve().parent.parent
EDGE_SEED = REPO / "tests" / "testdata" / "seeds" / "tfo-edge-buffering.yaml"

SPANS_PER_REQUEST = 512
DISTINCT_BODIES = 4
WARMUP_SECONDS = 2
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SAMPLE_INTERVAL = 0.2
REQUEST_TIMEOUT = 10  # seconds a single request may take before it counts as an error

AGENT_HTTP_PORT = 4318
AGENT_GRPC_PORT = 4317
AGENT_HEALTH_PORT = 13133
ROTEL_HTTP_PORT = 14318
ROTEL_GRPC_PORT = 14317

TARGETS = ("rotel", "default", "edge")


class BenchError(RuntimeError):
    """A target or the load generator could not be run."""


# --------------------------------------------------------------------------- bodies


def _str_attr(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def build_body(rng: random.Random) -> bytes:
    """One ExportTraceServiceRequest with SPANS_PER_REQUEST realistic server spans."""
    routes = ["/api/v1/orders/{id}", "/api/v1/cart", "/api/v1/users/{id}", "/healthz", "/api/v1/payments"]
    methods = ["GET", "POST", "PUT", "DELETE"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64)", "okhttp/4.12.0", "curl/8.5.0", "python-requests/2.31"]
    now = time.time_ns()
    spans = []
    for _ in range(SPANS_PER_REQUEST):
        method, route = rng.choice(methods), rng.choice(routes)
        start = now - rng.randrange(1_000_000, 60_000_000_000)
        path = route.replace("{id}", str(rng.randrange(1, 10**6)))
        spans.append(
            Span(
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                name=f"{method} {route}",
                kind=Span.SpanKind.SPAN_KIND_SERVER,
                start_time_unix_nano=start,
                end_time_unix_nano=start + rng.randrange(100_000, 900_000_000),
                attributes=[
                    _str_attr("http.request.method", method),
                    _str_attr("http.route", route),
                    _str_attr("url.path", path),
                    _str_attr("http.response.status_code", rng.choice(["200", "200", "201", "404", "500"])),
                    _str_attr("server.address", "checkout.internal"),
                    _str_attr("client.address", f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"),
                    _str_attr("user_agent.original", rng.choice(agents)),
                    _str_attr("network.protocol.version", "1.1"),
                ],
            )
        )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_str_attr("service.name", "checkout")]),
                scope_spans=[
                    ScopeSpans(scope=InstrumentationScope(name="bench.ingest", version="1.0"), spans=spans)
                ],
            )
        ]
    )
    return request.SerializeToString()


def write_bodies(directory: Path) -> list[Path]:
    rng = random.Random(20240607)
    paths = []
    for i in range(DISTINCT_BODIES):
        path = directory / f"body{i}.pb"
        path.write_bytes(build_body(rng))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- load generators


@dataclasses.dataclass
class LoadResult:
    ok: int = 0
    refused: int = 0
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    p50_ms: float = 0.0  # latency of one request, answered ones
    p99_ms: float = 0.0


WRK_SCRIPT = r"""
-- Requests are formatted once per thread; request() hands out a ready buffer.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, refused, other = 0, 0, 0
  reqs, n = {}, 0
  local headers = { ["Content-Type"] = "application/x-protobuf" }
  for _, path in ipairs(args) do
    local f = assert(io.open(path, "rb"))
    reqs[#reqs + 1] = wrk.format("POST", "/v1/traces", headers, f:read("*a"))
    f:close()
  end
end

function request()
  n = n % #reqs + 1
  return reqs[n]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  elseif status == 429 or status == 503 then
    refused = refused + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local o, r, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o, r, x = o + t:get("ok"), r + t:get("refused"), x + t:get("other")
  end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", o, r, x,
    e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _run_child(cmd: list[str], timeout: float) -> tuple[str, float, float]:
    """Run a load generator process; return (stdout, wall seconds, its CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise BenchError(f"load generator exited with {proc.returncode}: {err.strip()[-500:]}")
    return out, wall, cpu


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """`cmd` run on one CPU only (taskset), or as it is."""
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def run_wrk(url: str, bodies: list[Path], connections: int, seconds: int, workdir: Path,
            cpu: int | None = None) -> LoadResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk not found: install it with `apt-get install -y wrk`, or use --loadgen python")
    script = workdir / "otlp.lua"
    script.write_text(WRK_SCRIPT)
    cmd = [
        wrk, "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={REQUEST_TIMEOUT}s",
        "-s", str(script), url, "--", *map(str, bodies),
    ]
    out, _, cpu_seconds = _run_child(pinned(cmd, cpu), timeout=seconds + REQUEST_TIMEOUT + 30)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            ok, refused, other, sock_errors, duration_us, p50_us, p99_us = map(int, line.split()[1:])
            return LoadResult(ok, refused, other + sock_errors, duration_us / 1e6, cpu_seconds,
                              p50_us / 1e3, p99_us / 1e3)
    raise BenchError(f"unexpected wrk output:\n{out}")


def run_python(url: str, bodies: list[Path], connections: int, seconds: int, workdir: Path,
               cpu: int | None = None) -> LoadResult:
    cmd = [sys.executable, __file__, "_worker", url, str(seconds), str(connections), *map(str, bodies)]
    out, _, cpu_seconds = _run_child(pinned(cmd, cpu), timeout=seconds + REQUEST_TIMEOUT + 30)
    data = json.loads(out.strip().splitlines()[-1])
    return LoadResult(data["ok"], data["refused"], data["errors"], data["seconds"], cpu_seconds,
                      data["p50_ms"], data["p99_ms"])


async def _python_worker(url: str, seconds: float, connections: int, bodies: list[bytes]) -> dict:
    """aiohttp closed-loop client; runs in its own process (see `_worker`)."""
    import aiohttp

    counts: dict[str, float] = {"ok": 0, "refused": 0, "errors": 0}
    latencies: list[float] = []
    headers = {"Content-Type": "application/x-protobuf"}
    max_requests = 10_000_000  # hard cap, far above anything reachable
    sent = 0
    started = time.monotonic()
    deadline = started + seconds
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=connections)

    async def one_connection(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal sent
        i = offset
        while time.monotonic() < deadline and sent < max_requests:
            sent += 1
            i += 1
            sent_at = time.monotonic()
            try:
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError):
                counts["errors"] += 1
                continue
            if time.monotonic() > deadline:
                break  # answered after the window closed: not counted, like wrk
            latencies.append(time.monotonic() - sent_at)
            if 200 <= status < 300:
                counts["ok"] += 1
            elif status in (429, 503):
                counts["refused"] += 1
            else:
                counts["errors"] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(one_connection(session, k) for k in range(connections)))
    counts["seconds"] = min(time.monotonic(), deadline) - started
    latencies.sort()
    for name, q in (("p50_ms", 0.50), ("p99_ms", 0.99)):
        counts[name] = latencies[min(int(q * len(latencies)), len(latencies) - 1)] * 1e3 if latencies else 0.0
    return counts


LOADGENS = {"wrk": run_wrk, "python": run_python}


# --------------------------------------------------------------------------- targets


def port_open(port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=timeout):
        return True
    return False


def health_status(port: int) -> int | None:
    """HTTP status of GET /health/ready, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@dataclasses.dataclass
class Target:
    name: str
    cmd: list[str]
    env: dict[str, str]
    http_port: int
    health_port: int | None
    ports: tuple[int, ...]
    cwd: Path | None = None  # where it runs; the repository unless set


def make_target(name: str, workdir: Path) -> Target:
    env = {k: v for k, v in os.environ.items() if k != "EDGEAGENT_UPSTREAM"}
    if name == "rotel":
        binary = find_rotel()
        cmd = [
            binary, "start",
            "--otlp-http-endpoint", f"127.0.0.1:{ROTEL_HTTP_PORT}",
            "--otlp-grpc-endpoint", f"127.0.0.1:{ROTEL_GRPC_PORT}",
            "--exporter", "blackhole",
            "--pid-file", str(workdir / "rotel.pid"),
        ]
        return Target(name, cmd, env, ROTEL_HTTP_PORT, None, (ROTEL_HTTP_PORT, ROTEL_GRPC_PORT))

    agent = [sys.executable, "-m", "edgeagent", "run"]
    agent_ports = (AGENT_HTTP_PORT, AGENT_GRPC_PORT, AGENT_HEALTH_PORT)
    env["STATE_DIRECTORY"] = str(workdir / "state")
    (workdir / "state").mkdir()
    if name == "default":
        return Target(name, agent, env, AGENT_HTTP_PORT, AGENT_HEALTH_PORT, agent_ports)

    if name == "edge":
        if not EDGE_SEED.is_file():
            raise BenchError(f"seed config {EDGE_SEED.relative_to(REPO)} not found")
        queue = workdir / "queue"
        queue.mkdir()
        text = EDGE_SEED.read_text()
        text = text.replace("/var/lib/otelcol/queue", str(queue)).replace("0.0.0.0", "127.0.0.1")
        config = workdir / "edge-buffering.yaml"
        config.write_text(text)
        env.update(
            TELEMETRYFLOW_ENDPOINT="http://127.0.0.1:1",
            TELEMETRYFLOW_WORKSPACE_ID="bench-workspace",
            TELEMETRYFLOW_TENANT_ID="bench-tenant",
            EDGE_LOCATION="bench-edge",
        )
        return Target(name, [*agent, "--config", str(config)], env, AGENT_HTTP_PORT, AGENT_HEALTH_PORT, agent_ports)

    raise BenchError(f"unknown target {name!r}")


def find_rotel() -> str:
    found = shutil.which("rotel-agent")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import rotel

        candidate = Path(rotel.__file__).parent / "rotel-agent"
        if candidate.is_file():
            return str(candidate)
    raise BenchError("rotel-agent not found: install it with `pip install rotel`")


def wait_ready(target: Target, proc: subprocess.Popen, log: Path) -> None:
    """Bounded wait: health endpoint answering 200, or (without health) the OTLP port accepting."""
    deadline = time.monotonic() + READY_TIMEOUT
    port_up_since = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{target.name} exited with {proc.returncode} during start-up:\n{tail(log)}")
        if port_open(target.http_port):
            port_up_since = port_up_since or time.monotonic()
            if target.health_port is None:
                return
            status = health_status(target.health_port)
            if status == 200:
                return
            if status is None and time.monotonic() - port_up_since > 3.0:
                return  # no health endpoint after all; the OTLP port is up
        time.sleep(0.1)
    raise BenchError(f"{target.name} not ready within {READY_TIMEOUT:.0f} s:\n{tail(log)}")


def disk_bytes(directory: Path) -> int:
    """Bytes actually allocated under a directory (sparse files count only what is written)."""
    total = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_blocks * 512
    return total


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def stop(proc: subprocess.Popen) -> None:
    """Terminate a process this script started, escalating to SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


# --------------------------------------------------------------------------- sampling


def rss_anon_bytes(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """CPU seconds and RssAnon of a process tree over a window, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.rss_peak = 0
        self.rss_end = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [self.root, *self.root.children(recursive=True)]
        return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
                if proc is self.root:
                    total += t.children_user + t.children_system
        return total

    def _sample_rss(self) -> None:
        self.rss_end = sum(rss_anon_bytes(p.pid) for p in self._tree())
        self.rss_peak = max(self.rss_peak, self.rss_end)

    def _run(self) -> None:
        max_samples = 100_000
        for _ in range(max_samples):
            self._sample_rss()
            if self._stop.wait(SAMPLE_INTERVAL):
                break

    def __enter__(self) -> Sampler:
        self._cpu0, self._t0 = self.cpu_seconds(), time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample_rss()
        self.cores = (self.cpu_seconds() - self._cpu0) / max(time.monotonic() - self._t0, 1e-9)


# --------------------------------------------------------------------------- one run


@dataclasses.dataclass
class Row:
    target: str
    load: LoadResult | None = None
    cores: float = 0.0
    rss_peak: int = 0
    rss_end: int = 0
    disk: int = 0
    error: str = ""

    @property
    def spans_per_s(self) -> float:
        return self.load.ok * SPANS_PER_REQUEST / self.load.seconds if self.load and self.load.seconds else 0.0


def bench_target(name: str, args: argparse.Namespace, bodies: list[Path], workdir: Path) -> Row:
    target = make_target(name, workdir)
    busy = [p for p in target.ports if port_open(p)]
    if busy:
        raise BenchError(f"port(s) {busy} on 127.0.0.1 already in use; stop whatever listens there")
    log = workdir / f"{name}.log"
    loadgen = LOADGENS[args.loadgen]
    url = f"http://127.0.0.1:{target.http_port}/v1/traces"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            target.cmd, env=target.env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        wait_ready(target, proc, log)
        loadgen(url, bodies, args.connections, WARMUP_SECONDS, workdir)
        with Sampler(proc.pid) as sampler:
            load = loadgen(url, bodies, args.connections, args.duration, workdir)
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} during the run:\n{tail(log)}")
        return Row(name, load, sampler.cores, sampler.rss_peak, sampler.rss_end, disk_bytes(workdir))
    finally:
        stop(proc)


# --------------------------------------------------------------------------- report


def print_table(rows: list[Row]) -> None:
    mib = 1024 * 1024
    header = (
        f"{'target':<8} {'spans/s':>10} {'req/s':>8} {'refused':>8} {'errors':>7} "
        f"{'cores':>6} {'CPU ms/req':>10} {'RssAnon peak/end MiB':>21} {'disk MiB':>9} {'loadgen cores':>14}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.load is None:
            print(f"{row.target:<8} failed: {row.error.splitlines()[0] if row.error else '?'}")
            continue
        load = row.load
        rss = f"{row.rss_peak / mib:.0f} / {row.rss_end / mib:.0f}"
        requests_per_s = (load.ok + load.refused + load.errors) / load.seconds
        cpu_ms = row.cores / requests_per_s * 1000 if requests_per_s else 0.0
        print(
            f"{row.target:<8} {row.spans_per_s:>10,.0f} {load.ok / load.seconds:>8,.1f} {load.refused:>8} "
            f"{load.errors:>7} {row.cores:>6.2f} {cpu_ms:>10.2f} {rss:>21} {row.disk / mib:>9.0f} "
            f"{load.cpu_seconds / load.seconds:>14.2f}"
        )
    rotel = next((r for r in rows if r.target == "rotel" and r.load), None)
    if rotel and rotel.spans_per_s:
        for row in rows:
            if row.target != "rotel" and row.load:
                print(f"edgeagent {row.target} / rotel: {row.spans_per_s / rotel.spans_per_s:.2f}x spans/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=TARGETS, action="append", help="run only this target (repeatable)")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per target (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--loadgen", choices=sorted(LOADGENS), default="wrk", help="load generator (default wrk)")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.connections < 1:
        parser.error("--duration and --connections must be at least 1")

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgeagent-bench-") as tmp:
        bodies = write_bodies(Path(tmp))
        size = sum(p.stat().st_size for p in bodies) / len(bodies) / 1024
        print(
            f"{SPANS_PER_REQUEST} spans/request, {len(bodies)} bodies of ~{size:.0f} KiB, "
            f"{args.connections} connections, {WARMUP_SECONDS} s warm-up + {args.duration} s, "
            f"loadgen {args.loadgen}, {psutil.cpu_count()} CPUs",
            flush=True,
        )
        for name in args.only or TARGETS:
            workdir = Path(tmp) / name
            workdir.mkdir()
            print(f"running {name} ...", flush=True)
            try:
                rows.append(bench_target(name, args, bodies, workdir))
            except BenchError as exc:
                print(f"{name}: {exc}", file=sys.stderr, flush=True)
                rows.append(Row(name, error=str(exc)))
    print()
    print_table(rows)
    return 1 if any(row.load is None for row in rows) else 0


def worker_main(argv: list[str]) -> int:
    url, seconds, connections, *paths = argv
    bodies = [Path(p).read_bytes() for p in paths]
    result = asyncio.run(_python_worker(url, float(seconds), int(connections), bodies))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        sys.exit(worker_main(sys.argv[2:]))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; started processes stopped", file=sys.stderr)
        sys.exit(130)
