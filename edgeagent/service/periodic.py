"""Periodic metric readers: every `interval` the agent's own metrics go to an OTLP upstream (or stdout).

Each reader owns one task and one exporter, the agent's own: the otlp_http exporter's HTTP/1.1
client for `http/protobuf`, the otlp_grpc exporter's client for `grpc` (so headers, compression,
TLS and the environment's proxy work as they do for data). One push is one request, bounded by
the reader's `timeout`; it is not retried (the next interval carries newer values, and delta
points carry what a failed push did not deliver). A failed push is counted in
`edgeagent_telemetry_metrics_pushes{result="failed"}` and logged when pushes start failing, at
most every LOG_EVERY seconds while they keep failing, and when they work again; it never stops
the agent. `stop()` pushes once more, within the timeout, so the last counts are not lost.

The reader is a supervised periodic job (runtime/supervise.py): an unexpected error of a round is
counted in `edgeagent_background_errors{task=<reader>}` and the next interval pushes again. Its
task ended by anything but `stop()` (a cancellation from elsewhere, an error that is no
Exception) is counted there too, logged (the first time, then at most every supervise.LOG_EVERY
seconds) and started again after its interval (supervise.Kept): the agent's metrics never stop
being pushed unnoticed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Protocol

from edgeagent.config.periodic import OtlpPush, Periodic
from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.extensions.metrics import Counter, Metrics
from edgeagent.runtime import logwriter, supervise
from edgeagent.service.metrics_otlp import Snapshot
from edgeagent.signals import Signal
from otel.otlpjson import to_otlp_json

log = logging.getLogger(__name__)
LOG_EVERY = 300.0  # seconds between two logs of the same failing reader


class Push(Protocol):
    """What a reader asks of its exporter: the otlp exporters' own interface."""

    async def start(self) -> None: ...

    async def send(self, signal: Signal, body: bytes) -> Any: ...

    async def shutdown(self) -> None: ...


class Console:
    """The `console` exporter: each push as one line of OTLP/JSON on stdout, written by the log's
    thread (runtime/logwriter.py): a full pipe whose reader stalled never holds a push, nor the
    stop (a worker thread blocked in the write did: the stop waited for it for good)."""

    def __init__(self) -> None:
        self._stdout = logwriter.shared(1, "stdout")

    async def start(self) -> None:
        pass

    async def send(self, signal: Signal, body: bytes) -> None:
        line = json.dumps(to_otlp_json(signal.request_class.FromString(body)), separators=(",", ":")) + "\n"
        self._stdout.write(line.encode())

    async def shutdown(self) -> None:
        pass


def exporter(name: str, otlp: OtlpPush | None) -> Push:
    """The exporter a periodic reader pushes with."""
    if otlp is None:
        return Console()
    tls = {key: value for key, value in (("ca_file", otlp.certificate), ("cert_file", otlp.client_certificate),
                                         ("key_file", otlp.client_key)) if value}
    common = {"headers": otlp.header_map(), "compression": otlp.compression, "timeout": otlp.export_timeout(),
              "sending_queue": {"enabled": False}}
    if otlp.protocol == "grpc":
        url = otlp.url()
        scheme, _, rest = url.partition("://")
        endpoint = f"{scheme}://{rest.partition('/')[0]}"  # gRPC takes the host and port; the path means nothing
        return OtlpGrpcExporter(name, OtlpGrpcConfig.model_validate(
            {**common, "endpoint": endpoint, "tls": tls, "keepalive": {"enabled": False},
             "balancer_name": "pick_first"}))
    # endpoint "" and metrics_endpoint: the one URL otelconf posts to
    return OtlpHttpExporter(name, OtlpHttpConfig.model_validate(
        {**common, "endpoint": "", "metrics_endpoint": otlp.metrics_url(), "tls": tls or None}))


class PeriodicReader:
    """One `readers::N::periodic`: start() begins pushing, stop() pushes a last time and stops (idempotent)."""

    def __init__(self, name: str, settings: Periodic, metrics: Metrics, leave_out: frozenset[str], pushes: Counter,
                 counting: supervise.Counting):
        self.name = name
        self.settings = settings
        otlp = settings.exporter.otlp
        self.snapshot = Snapshot(metrics, otlp.temporality_preference if otlp else "cumulative")
        self.leave_out = leave_out
        self.push = exporter(name, otlp)
        self._pushes = pushes
        self._task = supervise.Kept(self._run, name, {"reader": name}, counting, settings.interval_seconds())
        self._counting = counting
        self._failing_since: float | None = None
        self._failures = 0
        self._logged_at = 0.0

    async def start(self) -> None:
        try:
            await self.push.start()
        except (OSError, ValueError, LookupError) as exc:  # a certificate file that does not load, ...
            raise ValueError(f"service::telemetry::metrics::{self.name}: {exc}") from exc
        self._task.start()

    async def _run(self) -> None:
        await supervise.every(self.settings.interval_seconds(), self.push_once, self.name, {"reader": self.name},
                              self._counting)

    async def push_once(self) -> bool:
        """One push within the reader's timeout; False when it failed (counted and, rate-limited, logged)."""
        try:
            async with asyncio.timeout(self.settings.timeout_seconds()):
                body = self.snapshot.request(self.leave_out).SerializeToString()
                await self.push.send(Signal.METRICS, body)
        except Exception as exc:  # noqa: BLE001 (whatever failed, the agent goes on; the next push tries again)
            self._failed(exc)
            return False
        self.snapshot.delivered()
        self._pushes.inc(1, self.name, "delivered")
        if self._failing_since is not None:
            log.info("the agent's metrics reach the upstream again",
                     extra={"reader": self.name, "failed_pushes": self._failures})
            self._failing_since, self._failures = None, 0
        return True

    def _failed(self, exc: Exception) -> None:
        self._pushes.inc(1, self.name, "failed")
        self._failures += 1
        now = time.monotonic()
        error = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            error = f"no answer within the reader's timeout ({self.settings.timeout_seconds():g}s)"
        if self._failing_since is None:
            self._failing_since, self._logged_at = now, now
            log.warning("pushing the agent's metrics failed; the next interval tries again",
                        extra={"reader": self.name, "error": error})
        elif now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning("pushing the agent's metrics still fails",
                        extra={"reader": self.name, "error": error, "failed_pushes": self._failures,
                               "seconds": round(now - self._failing_since)})

    async def stop(self) -> None:
        if not self._task.running:
            return
        task = self._task.stop()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await self.push_once()  # the last values, within the timeout
        await self.push.shutdown()
