#!/usr/bin/env python3
"""Persistent queue figures: flash wear, disk per span, start-up with a large backlog, drain rate.

Method
    1. Ingest and drain, one agent process: `edgeagent run` with a file_storage queue that
       compacts on rebound, fsync on, upstream down. wrk (see ingest.py) sends 512-span
       OTLP/HTTP requests for --ingest-seconds. Then a local sink starts on the upstream's
       port (it answers 200 without parsing, so it is never the bottleneck) and the backlog
       drains. The agent's write_bytes from /proc/PID/io over the whole cycle, divided by
       the compressed payload bytes it queued (edgeagent_queue_bytes at the end of ingest),
       is the write amplification (flash wear). Bytes on disk per span are the LMDB pages in
       use after ingest divided by the spans accepted, next to the uncompressed protobuf.
       The drain rate is spans delivered per second from the sink's start to an empty queue.
    2. Start-up: a queue directory is filled with --backlog-gib of records written directly
       through the queue store (incompressible 1 MiB records), then `edgeagent run` is timed
       from exec to /health/ready answering 200, and its RssAnon is read at that moment; the
       same with an empty queue. The page cache is dropped first (when allowed) so the backlog
       is read from disk, and the interpreter's own files are warmed, so the figure is about
       the queue, not about importing Python.

Usage
    python bench/persistent_queue.py [--ingest-seconds 5] [--backlog-gib 1] [--connections 16] [--attributes]

    With --attributes the pipeline adds the Edge seed's three attributes to every span; the
    queue stores them next to each request and adds them when the record is read, so the
    drain rate includes that work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ingest  # noqa: E402  (the load generator and body builder)

from edgeagent.queue.store import QueueStore  # noqa: E402
from edgeagent.signals import Signal  # noqa: E402

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http_port}
processors:
  batch:
    timeout: 200ms
    send_batch_size: 8192
  attributes:
    actions:
      - {{key: telemetryflow.workspace.id, value: bench-workspace, action: upsert}}
      - {{key: telemetryflow.tenant.id, value: bench-tenant, action: upsert}}
      - {{key: edge.location, value: bench-edge, action: upsert}}
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{sink_port}
    compression: none
    retry_on_failure:
      initial_interval: 100ms
      max_interval: 500ms
      max_elapsed_time: 0s
    sending_queue:
      num_consumers: 4
      queue_size: 10000000
      storage: file_storage
extensions:
  health_check:
    endpoint: 127.0.0.1:{health_port}
  file_storage:
    directory: {queue_dir}
    compaction:
      on_rebound: true
      rebound_needed_threshold_mib: 100
      rebound_trigger_threshold_mib: 10
      check_interval: 1s
service:
  extensions: [health_check, file_storage]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [{processors}]
      exporters: [otlphttp]
"""


class Sink:
    """An upstream that accepts everything as fast as it can: it reads the body and answers 200."""

    def __init__(self, port: int):
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=b"", content_type="application/x-protobuf")

        async def serve() -> web.AppRunner:
            app = web.Application(client_max_size=1 << 30)
            app.router.add_post("/v1/traces", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        self.thread.start()
        self.runner = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            base = name.partition("{")[0]
            out[base] = out.get(base, 0.0) + float(value)
    return out


def write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def start_agent(args: list[str], env: dict[str, str], health_port: int, log: Path) -> tuple[subprocess.Popen, float]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "edgeagent", *args], env={**os.environ, **env},
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    for _ in range(3000):
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited:\n{log.read_text()[-3000:]}")
        if ingest.health_status(health_port) == 200:
            return proc, time.monotonic() - started
        time.sleep(0.005)
    raise RuntimeError("agent not ready in time")


def stop_agent(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ingest_and_drain(work: Path, seconds: int, connections: int, attributes: bool) -> None:
    ports = {name: free_port() for name in ("http_port", "sink_port", "health_port", "metrics_port")}
    queue_dir = work / "queue"
    config = work / "bench.yaml"
    processors = "attributes, batch" if attributes else "batch"
    config.write_text(CONFIG.format(queue_dir=queue_dir, processors=processors, **ports))
    bodies = ingest.write_bodies(work)
    body_size = sum(path.stat().st_size for path in bodies) / len(bodies)
    proc, _ = start_agent(["run", "--config", str(config)], {}, ports["health_port"], work / "agent.log")
    try:
        written_before = write_bytes(proc.pid)
        load = ingest.run_wrk(f"http://127.0.0.1:{ports['http_port']}/v1/traces", bodies, connections, seconds, work)
        time.sleep(0.5)
        after_ingest = metrics(ports["metrics_port"])
        spans = after_ingest["otelcol_receiver_accepted_spans"]
        compressed = after_ingest["edgeagent_queue_bytes"]
        pages = after_ingest["edgeagent_queue_storage_bytes"]
        written_ingest = write_bytes(proc.pid) - written_before
        uncompressed = load.ok * body_size
        print(f"ingest: {spans:,.0f} spans in {load.ok:,} requests ({spans / load.seconds:,.0f} spans/s), "
              f"{uncompressed / 2**20:,.1f} MiB of protobuf -> {compressed / 2**20:,.1f} MiB of zstd records")
        print(f"disk per span: {pages / spans:,.1f} bytes of LMDB pages in use "
              f"(uncompressed {uncompressed / spans:,.1f} bytes): {pages / uncompressed:.3f} of the protobuf "
              f"(target <= 0.25); file {after_ingest['edgeagent_queue_file_bytes'] / 2**20:,.1f} MiB")

        sink = Sink(ports["sink_port"])
        drain_started = time.monotonic()
        sink.start()
        try:
            for _ in range(36000):
                if metrics(ports["metrics_port"])["edgeagent_queue_items"] == 0:
                    break
                time.sleep(0.05)
            drain_seconds = time.monotonic() - drain_started
            print(f"drain: {spans:,.0f} spans in {drain_seconds:.2f} s = {spans / drain_seconds:,.0f} spans/s "
                  f"into a local upstream (4 consumers, 8192-span batches)")
            time.sleep(3)  # let the rebound compaction run
            final = metrics(ports["metrics_port"])
        finally:
            sink.stop()
        written = write_bytes(proc.pid) - written_before
        print(f"write amplification: {written / 2**20:,.1f} MiB written to disk for {compressed / 2**20:,.1f} MiB "
              f"queued = {written / compressed:.2f} bytes per payload byte (target <= 1.3); ingest alone "
              f"{written_ingest / compressed:.2f}, drain and compaction {(written - written_ingest) / compressed:.2f}; "
              f"compactions {final['edgeagent_queue_compactions']:.0f}, file now "
              f"{final['edgeagent_queue_file_bytes'] / 2**20:,.1f} MiB")
    finally:
        stop_agent(proc)


def startup(work: Path, backlog_gib: float) -> None:
    async def fill(directory: Path) -> int:
        store = QueueStore(str(directory / "queue"), sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        body = os.urandom(1 << 20)
        count = int(backlog_gib * 1024)
        for start in range(0, count, 64):
            await asyncio.gather(*(store.put([queue], body, 512, Signal.TRACES) for _ in range(min(64, count - start))))
        await store.close()
        return count

    results = {}
    for label, gib in (("empty queue", 0), (f"{backlog_gib:g} GiB backlog", backlog_gib)):
        state = work / f"state-{gib}"
        state.mkdir()
        if gib:
            asyncio.run(fill(state))
        size = sum(f.stat().st_size for f in state.rglob("*") if f.is_file())
        health = free_port()
        args = ["run", "--state-dir", str(state), "--set", f"extensions::health_check::endpoint=127.0.0.1:{health}",
                "--set", f"receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{free_port()}",
                "--set", f"receivers::otlp::protocols::http::endpoint=127.0.0.1:{free_port()}",
                "--set", "service::telemetry::metrics::readers=[{pull: {exporter: {prometheus: "
                       f"{{host: 127.0.0.1, port: {free_port()}}}}}}}}}]"]
        # drop the page cache's copy of the backlog when allowed, so the start reads it from disk; then
        # warm the interpreter's own files, so the figure is about the queue, not about importing Python
        subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], capture_output=True)
        subprocess.run([sys.executable, "-c", "import edgeagent.service.service, edgeagent.cli"], check=True)
        proc, seconds = start_agent(args, {}, health, work / f"start-{gib}.log")
        anon = ingest.rss_anon_bytes(proc.pid)
        stop_agent(proc)
        results[label] = (seconds, anon, size)
        print(f"start-up with {label} ({size / 2**30:.2f} GiB on disk): ready in {seconds:.3f} s, "
              f"RssAnon {anon / 2**20:.1f} MiB")
    (empty_s, empty_anon, _), (full_s, full_anon, _) = results.values()
    print(f"backlog effect: +{full_s - empty_s:.3f} s to ready (target: total < 1 s), "
          f"{(full_anon - empty_anon) / 2**20:+.1f} MiB RssAnon (target: within 10 MiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ingest-seconds", type=int, default=5)
    parser.add_argument("--backlog-gib", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--attributes", action="store_true",
                        help="add the Edge seed's three upserted attributes to every span (attributes processor)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeagent-bench-queue-"))
    try:
        ingest_and_drain(work, args.ingest_seconds, args.connections, args.attributes)
        startup(work, args.backlog_gib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
