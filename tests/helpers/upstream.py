"""A real OTLP/HTTP server on loopback that records what it receives.

It runs its own event loop in a thread, so synchronous tests can start, stop, inspect and
re-program it (status codes, Retry-After) while the agent under test talks to it.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import threading
import zlib
from dataclasses import dataclass, field

import zstandard
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_CLASSES = {"traces": ExportTraceServiceRequest, "metrics": ExportMetricsServiceRequest, "logs": ExportLogsServiceRequest}


@dataclass
class Received:
    signal: str
    headers: dict[str, str]
    message: object
    raw_size: int


@dataclass
class Upstream:
    port: int
    path_prefix: str = ""
    status: int = 200
    retry_after: str | None = None
    ssl_context: ssl.SSLContext | None = None  # serve HTTPS with this context
    requests: list[Received] = field(default_factory=list)
    attempts: int = 0

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}{self.path_prefix}"

    def start(self) -> "Upstream":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("upstream did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=256 << 20)
        for signal in _CLASSES:
            app.router.add_post(f"{self.path_prefix}/v1/{signal}", self._handler(signal))
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True,
                          ssl_context=self.ssl_context).start()

    def _handler(self, signal: str):
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            with self._lock:
                self.attempts += 1
                status, retry_after = self.status, self.retry_after
            if status != 200:
                headers = {"Retry-After": retry_after} if retry_after else {}
                return web.Response(status=status, text="refused by test upstream", headers=headers)
            encoding = request.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "zstd":
                body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            message = _CLASSES[signal].FromString(body)
            with self._lock:
                self.requests.append(Received(signal, dict(request.headers), message, len(body)))
            return web.Response(body=b"", content_type="application/x-protobuf")

        return handle

    def stop(self) -> None:
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    # ---- what arrived ------------------------------------------------------------------------

    def received(self, signal: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.signal == signal]

    def spans(self) -> list:
        return [span for r in self.received("traces") for rs in r.message.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def span_ids(self) -> set[bytes]:
        return {span.span_id for span in self.spans()}

    def log_records(self) -> list:
        return [rec for r in self.received("logs") for rl in r.message.resource_logs
                for sl in rl.scope_logs for rec in sl.log_records]

    def data_points(self) -> list:
        points = []
        for r in self.received("metrics"):
            for rm in r.message.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        if kind:
                            points.extend(getattr(metric, kind).data_points)
        return points
