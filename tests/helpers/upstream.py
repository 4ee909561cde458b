"""A real OTLP/HTTP server on loopback that records what it receives.

It runs its own event loop in a thread, so synchronous tests can start, stop, inspect and
re-program it while the agent under test talks to it.

Every request is recorded as an `Attempt` in `calls` (arrival and answer time, status, items,
bytes on the wire); requests answered 200 are also kept in `requests` with the parsed message.
What the server answers is programmable; each setting holds until it is changed:

* `status` (and `retry_after`): answer every request with that status (and Retry-After);
* `hang`: hold each request open that many seconds before answering;
* `max_items`: answer 413 to a request that carries more items than that;
* `rejected`: answer 200 with a partial success that rejects that many items;
* `redirect` (a status and a Location): answer every request with that redirect; `echo`:
  put the request's headers in the body of every error answer, as some proxies do;
* any other path answers 200 to any method (a captive portal's login page) and is recorded
  in `stray` as (method, path);
* `refuse()` / `listen()`: stop listening, so connections are refused, and listen again on
  the same port; `refuse(reset=True)` accepts and resets every connection instead, so that
  each connection attempt is recorded (as an `Attempt` with status 0);
* `play(...)`: a script of such settings over time, run by the server's own loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cramjam
import zstandard
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _spans(message) -> list:
    return [span for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans]


def _log_records(message) -> list:
    return [rec for rl in message.resource_logs for sl in rl.scope_logs for rec in sl.log_records]


def _data_points(message) -> list:
    return [point for rm in message.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
            if metric.WhichOneof("data") for point in getattr(metric, metric.WhichOneof("data")).data_points]


# signal -> (request class, response class, partial-success field, the items of a request)
_SIGNALS = {
    "traces": (ExportTraceServiceRequest, ExportTraceServiceResponse, "rejected_spans", _spans),
    "metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse, "rejected_data_points", _data_points),
    "logs": (ExportLogsServiceRequest, ExportLogsServiceResponse, "rejected_log_records", _log_records),
}


class _Arrived(Protocol):
    """A request an upstream received (HTTP or gRPC)."""

    signal: str
    message: object


class SpanIndex:
    """The span ids of a growing list of received requests, each request read once: tests poll them
    while millions of spans arrive, and reading every request again held the GIL (and the upstream's
    loop with it) for a second a call."""

    def __init__(self) -> None:
        self._ids: set[bytes] = set()
        self._read = 0
        self._lock = threading.Lock()

    def update(self, requests: Sequence[_Arrived]) -> set[bytes]:
        """Every span id in `requests`, the list this index was given before and what was appended since."""
        with self._lock:
            new, self._read = requests[self._read:], len(requests)
            self._ids.update(span.span_id for r in new if r.signal == "traces" for span in _spans(r.message))
            return set(self._ids)


@dataclass
class Received:
    signal: str
    headers: dict[str, str]
    message: object
    raw_size: int


@dataclass
class Attempt:
    signal: str  # "" for a connection reset while refusing
    at: float  # time.monotonic() when the request arrived
    answered: float  # time.monotonic() when the answer went out, after any hang
    status: int  # the HTTP status answered; 0 for a connection reset while refusing
    items: int
    wire_bytes: int  # the body as sent (Content-Length), before decompression


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    if encoding in ("deflate", "zlib"):  # otelcol sends the zlib format for both
        return zlib.decompress(body)
    if encoding == "snappy":  # the block format (otelcol's confighttp.framedSnappy gate)
        return bytes(cramjam.snappy.decompress_raw(body))
    if encoding == "lz4":  # the frame format
        return bytes(cramjam.lz4.decompress(body))
    return body


@dataclass
class Upstream:
    port: int
    path_prefix: str = ""
    status: int = 200
    retry_after: str | None = None
    ssl_context: ssl.SSLContext | None = None  # serve HTTPS with this context
    hang: float = 0.0
    max_items: int | None = None
    rejected: int = 0
    redirect: tuple[int, str] | None = None
    echo: bool = False
    requests: list[Received] = field(default_factory=list)
    calls: list[Attempt] = field(default_factory=list)
    stray: list[tuple[str, str]] = field(default_factory=list)
    host: str = "127.0.0.1"  # the loopback address it listens on

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._resetter: asyncio.AbstractServer | None = None
        self._script: concurrent.futures.Future | None = None
        self._lock = threading.Lock()
        self._span_index = SpanIndex()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}{self.path_prefix}"

    @property
    def attempts(self) -> int:
        with self._lock:
            return len(self.calls)

    def start(self) -> Upstream:
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
        for signal in _SIGNALS:
            app.router.add_post(f"{self.path_prefix}/v1/{signal}", self._handler(signal))
        app.router.add_route("*", "/{tail:.*}", self._portal)
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        await self._listen()

    def _handler(self, signal: str):
        request_class, response_class, rejected_field, items_of = _SIGNALS[signal]

        async def handle(request: web.Request) -> web.Response:
            arrived = time.monotonic()
            wire = await request.read()
            body = _decompress(wire, request.headers.get("Content-Encoding", ""))
            message = request_class.FromString(body)
            items = len(items_of(message))
            with self._lock:
                status, retry_after, hang = self.status, self.retry_after, self.hang
                max_items, rejected, redirect, echo = self.max_items, self.rejected, self.redirect, self.echo
            if hang:
                await asyncio.sleep(hang)
            if status == 200 and max_items is not None and items > max_items:
                status = 413
            if redirect is not None:
                status = redirect[0]
            with self._lock:
                self.calls.append(Attempt(signal, arrived, time.monotonic(), status, items,
                                          request.content_length or len(wire)))
                if status == 200:
                    self.requests.append(Received(signal, dict(request.headers), message, len(body)))
            if status != 200:
                headers = {"Retry-After": retry_after} if retry_after else {}
                if redirect is not None:
                    headers["Location"] = redirect[1]
                text = "refused by test upstream"
                if echo:
                    text += "; request headers: " + ", ".join(f"{k}: {v}" for k, v in request.headers.items())
                return web.Response(status=status, text=text, headers=headers)
            response = response_class()
            if rejected:
                setattr(response.partial_success, rejected_field, rejected)
                response.partial_success.error_message = "some items rejected by test upstream"
            return web.Response(body=response.SerializeToString(), content_type="application/x-protobuf")

        return handle

    async def _portal(self, request: web.Request) -> web.Response:
        await request.read()
        with self._lock:
            self.stray.append((request.method, request.path))
        return web.Response(text="<html>please log in</html>", content_type="text/html")

    # ---- listening, refusing, resetting ----------------------------------------------------------

    def refuse(self, reset: bool = False) -> None:
        """Stop listening and drop open connections; with `reset`, accept and reset each connection."""
        self._call(self._set_connections("reset" if reset else "refuse"))

    def listen(self) -> None:
        """Listen again on the same port."""
        self._call(self._set_connections("accept"))

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _set_connections(self, mode: str) -> None:
        if mode == "accept":
            await self._listen()
            return
        await self._close_listeners()
        for handler in self._runner.server.connections:
            handler.force_close()
        if mode == "reset":
            self._resetter = await asyncio.start_server(self._reset, self.host, self.port, reuse_address=True)

    async def _listen(self) -> None:
        if self._site is None:
            await self._close_listeners()
            self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True,
                                     ssl_context=self.ssl_context)
            await self._site.start()

    async def _close_listeners(self) -> None:
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()
        if self._resetter is not None:
            server, self._resetter = self._resetter, None
            server.close()
            await server.wait_closed()

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        with self._lock:
            self.calls.append(Attempt("", now, now, 0, 0, 0))

    # ---- a script of behaviours over time --------------------------------------------------------

    def play(self, *steps: tuple[float, dict], repeat: int = 1) -> concurrent.futures.Future:
        """Apply each step's settings in turn and hold them for its seconds, `repeat` times over.

        Settings are attribute names (`status=503`, `hang=3.0`, ...) and `connections`, one of
        "accept", "refuse" or "reset". Returns a future that is done when the script is."""
        self._script = asyncio.run_coroutine_threadsafe(self._play(steps, repeat), self._loop)
        return self._script

    async def _play(self, steps: tuple[tuple[float, dict], ...], repeat: int) -> None:
        for _ in range(repeat):
            for seconds, settings in steps:
                settings = dict(settings)
                connections = settings.pop("connections", None)
                with self._lock:
                    for name, value in settings.items():
                        if name not in ("status", "retry_after", "hang", "max_items", "rejected", "redirect", "echo"):
                            raise ValueError(f"not a setting of the upstream: {name}")
                        setattr(self, name, value)
                if connections is not None:
                    await self._set_connections(connections)
                await asyncio.sleep(seconds)

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._script is not None:
            self._script.cancel()
        self._call(self._close_listeners())
        self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    # ---- what arrived ------------------------------------------------------------------------

    def attempts_of(self, signal: str = "traces") -> list[Attempt]:
        with self._lock:
            return [a for a in self.calls if a.signal == signal]

    def received(self, signal: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.signal == signal]

    def spans(self) -> list:
        return [span for r in self.received("traces") for span in _spans(r.message)]

    def span_ids(self) -> set[bytes]:
        with self._lock:
            requests = list(self.requests)
        return self._span_index.update(requests)

    def log_records(self) -> list:
        return [rec for r in self.received("logs") for rec in _log_records(r.message)]

    def data_points(self) -> list:
        return [point for r in self.received("metrics") for point in _data_points(r.message)]
