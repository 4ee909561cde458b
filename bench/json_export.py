#!/usr/bin/env python3
"""One large record through a real agent to a loopback upstream: the agent's peak memory.

Method
    An upstream (this script with --serve, in a process of its own) takes OTLP/HTTP traces in
    JSON or protobuf, counts spans, requests and body sizes, and answers 200. An agent runs a
    traces pipeline without processors: the otlp receiver (HTTP, max_request_body_size 128 MiB)
    into the otlp_http exporter with `encoding: json` (or --encoding proto), one consumer, gzip.
    One ExportTraceServiceRequest of --spans spans (six 30-byte string attributes each: about
    350 bytes a span, 60 MiB for the default 175,000) is POSTed once; the clock stops when the
    upstream has every span.

    Printed: the record's size, the agent's resident memory when idle and its peak (VmHWM),
    the requests the upstream got and the largest body, and the slowest answer of the agent's
    health endpoint polled every 50 ms meanwhile (how long its event loop was held).

Usage
    python bench/json_export.py [--spans 175000] [--encoding json|proto]
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.net import free_port  # noqa: E402

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http_port}
        max_request_body_size: 134217728
exporters:
  otlp_http:
    endpoint: http://127.0.0.1:{upstream_port}
    encoding: {encoding}
    timeout: 120s
    sending_queue:
      num_consumers: 1
extensions:
  health_check:
    endpoint: 127.0.0.1:{health_port}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp_http]
"""


def serve(port: int) -> None:
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    stats = {"requests": 0, "spans": 0, "largest": 0, "bytes": 0}

    async def take(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has undone the gzip
        if request.content_type == "application/json":
            groups = json.loads(body).get("resourceSpans", [])
            spans = sum(len(scope.get("spans", [])) for group in groups for scope in group.get("scopeSpans", []))
        else:
            message = ExportTraceServiceRequest.FromString(body)
            spans = sum(len(scope.spans) for group in message.resource_spans for scope in group.scope_spans)
        stats.update(requests=stats["requests"] + 1, spans=stats["spans"] + spans, bytes=stats["bytes"] + len(body),
                     largest=max(stats["largest"], len(body)))
        return web.json_response({})

    async def show(_: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v1/traces", take)
    app.router.add_get("/stats", show)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def record(spans: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    group = request.resource_spans.add()
    group.resource.attributes.add(key="service.name").value.string_value = "checkout"
    scope = group.scope_spans.add()
    scope.scope.name = "bench"
    for index in range(spans):
        span = scope.spans.add(trace_id=index.to_bytes(16, "big"), span_id=(index + 1).to_bytes(8, "big"),
                               parent_span_id=(index + 7).to_bytes(8, "big"), name=f"GET /items/{index % 1000}",
                               kind=2, start_time_unix_nano=1_700_000_000_000_000_000 + index,
                               end_time_unix_nano=1_700_000_000_100_000_000 + index)
        for key in range(6):
            span.attributes.add(key=f"http.attr.{key}").value.string_value = f"value-{index}-{key}-" + "x" * 12
        span.status.code = 1
    return request.SerializeToString()


def memory(pid: int, key: str) -> int:
    """A /proc/<pid>/status figure in MiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) >> 10 for line in status if line.startswith(key + ":"))


def fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def run(spans: int, encoding: str) -> None:
    body = record(spans)
    print(f"record: {spans} spans, {len(body) / 2**20:.1f} MiB of protobuf; encoding: {encoding}")
    upstream_port, http_port, health_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "config.yaml"
        config.write_text(CONFIG.format(http_port=http_port, upstream_port=upstream_port, health_port=health_port,
                                        encoding=encoding))
        upstream = subprocess.Popen([sys.executable, __file__, "--serve", str(upstream_port)])
        agent = subprocess.Popen([sys.executable, "-m", "edgeagent", "run", "--config", str(config), "--state-dir",
                                  str(Path(work) / "state")], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            measure(agent.pid, body, spans, http_port, health_port, f"http://127.0.0.1:{upstream_port}/stats")
        finally:
            agent.terminate()
            agent.wait(30)
            upstream.terminate()
            upstream.wait(10)


def measure(pid: int, body: bytes, spans: int, http_port: int, health_port: int, stats_url: str) -> None:
    for _ in range(300):
        try:
            fetch(f"http://127.0.0.1:{health_port}/health/ready", 1)
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(1)
    idle = memory(pid, "VmRSS")
    waits: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            asked = time.monotonic()
            try:
                fetch(f"http://127.0.0.1:{health_port}/health", 60)
            except OSError:
                pass
            waits.append(time.monotonic() - asked)
            time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=120)
    connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
    status = connection.getresponse().status
    stats: dict = {"spans": 0}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and stats["spans"] < spans:
        time.sleep(0.2)
        try:
            stats = json.loads(fetch(stats_url, 30))
        except OSError:  # the upstream is busy parsing a large body
            continue
    done.set()
    print(f"receiver answered {status}; delivered {stats['spans']} spans in {time.monotonic() - started:.1f} s, "
          f"{stats['requests']} requests, largest body {stats['largest'] / 2**20:.1f} MiB")
    print(f"agent memory: idle {idle} MiB, peak (VmHWM) {memory(pid, 'VmHWM')} MiB; slowest health answer "
          f"{max(waits):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=175_000)
    parser.add_argument("--encoding", choices=("json", "proto"), default="json")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    else:
        run(args.spans, args.encoding)


if __name__ == "__main__":
    main()
