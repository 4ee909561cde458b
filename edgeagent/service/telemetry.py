"""The service's own telemetry: otelcol-named counters, queue gauges, drops, drain rate, upstream state.

Components count through the Host (`counter_inc`, `count`); gauges read live state at scrape
time. The metrics endpoint is `service::telemetry::metrics`.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable

from aiohttp import web

from edgeagent.config.service import MetricsConfig
from edgeagent.config.types import split_endpoint
from edgeagent.extensions.metrics import Metrics
from edgeagent.queue.lmdb_queue import DurableQueue
from edgeagent.service.storage import Stores
from edgeagent.signals import Signal

log = logging.getLogger(__name__)
Samples = list[tuple[tuple[str, ...], float]]


class Telemetry:
    """Counters every component may add to, and what the service knows about its upstreams."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.drain = DrainMeter()
        self.drops = DropLog(self.metrics)
        self.upstream_online: dict[str, bool | None] = {}
        self.problems: dict[str, str] = {}  # exporter or connector id -> its last failure, until it delivers
        self._runner: web.AppRunner | None = None
        _define_counters(self.metrics)

    def counter_inc(self, name: str, amount: float, *labels: str) -> None:
        self.metrics.counters[name].inc(amount, *labels)
        if name.startswith("otelcol_exporter_sent_"):
            self.drain.add(amount)

    def count(self, name: str, amount: float, *labels: str) -> None:
        """Count without measuring queue drain (sends of sub-pipelines drain no queue of their own)."""
        self.metrics.counters[name].inc(amount, *labels)

    def upstream_state(self, exporter_id: str, online: bool) -> None:
        previous = self.upstream_online.get(exporter_id)
        self.upstream_online[exporter_id] = online
        if previous is not None and previous != online:
            log.log(logging.INFO if online else logging.WARNING,
                    "upstream is %s", "reachable again" if online else "unreachable; data is kept in the queue",
                    extra={"exporter": exporter_id})

    def exporter_problem(self, exporter_id: str, problem: str | None) -> None:
        if problem is None:
            self.problems.pop(exporter_id, None)
        else:
            self.problems[exporter_id] = problem

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...],
              read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        self.metrics.gauge(name, documentation, labelnames, read)

    def watch_stores(self, stores: Stores) -> None:
        """Gauges of every queue and queue directory."""
        define_queue_gauges(self, stores)

    async def serve(self, settings: MetricsConfig) -> None:
        endpoints = settings.endpoints()
        if not endpoints:
            return

        async def handle(request: web.Request) -> web.Response:
            return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/metrics", handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for endpoint in endpoints:  # one server per prometheus reader
            host, port = split_endpoint(endpoint, 8888)
            await web.TCPSite(self._runner, host, port, reuse_address=True).start()

    async def stop_serving(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


def _define_counters(m: Metrics) -> None:
    for signal in Signal:
        items = signal.item_name
        m.counter(f"otelcol_exporter_sent_{items}", f"Number of {items} successfully sent to destination.",
                  ("exporter",))
        m.counter(f"otelcol_exporter_send_failed_{items}", f"Number of {items} in failed attempts to send to "
                  "destination (kept in the queue unless permanently rejected).", ("exporter",))
        m.counter(f"edgeagent_exporter_rejected_{items}", f"Number of {items} the upstream rejected in a partial "
                  "success.", ("exporter",))
    for name in ("spans", "logs", "datapoints"):
        m.counter(f"otelcol_processor_filter_{name}_filtered", f"Number of {name} dropped by the filter processor.",
                  ("filter",))
    m.counter("edgeagent_receiver_refused_requests", "Requests refused before or while they were read (memory "
              "limiter, shutdown).", ("receiver", "transport", "reason"))
    m.counter("edgeagent_receiver_client_disconnects", "Requests whose client went away before they were answered.",
              ("receiver", "transport"))
    m.counter("edgeagent_exporter_unexpected_errors", "Sends that failed with an unexpected error; the data "
              "stayed queued.", ("exporter",))
    m.counter("edgeagent_deadletter_items", "Items moved to the dead-letter store after a permanent rejection.",
              ("exporter", "data_type"))
    m.counter("edgeagent_corrupt_records", "Queue records that did not decode and were moved to the dead-letter "
              "store.", ("queue",))
    m.counter("edgeagent_queue_corruptions", "Queue data files that did not open and were moved aside.",
              ("directory",))


def define_queue_gauges(telemetry: Telemetry, stores: Stores) -> None:
    def per_queue(read: Callable[[DurableQueue], float]) -> Callable[[], Samples]:
        def samples() -> Samples:
            values: Samples = []
            for queue in stores.queues():
                exporter_id, _, signal = queue.name.rpartition("/")
                values.append(((exporter_id, signal), float(read(queue))))
            return values
        return samples

    def oldest_age(queue: DurableQueue) -> float:
        return max(0.0, time.time() - queue.oldest_ms / 1000) if queue.oldest_ms else 0.0

    labels = ("exporter", "data_type")
    gauge = telemetry.gauge
    gauge("otelcol_exporter_queue_size", "Current size of the retry queue (in the unit of its sizer).", labels,
          per_queue(lambda q: q.capacity_used()))
    gauge("otelcol_exporter_queue_capacity", "Fixed capacity of the retry queue (in the unit of its sizer).", labels,
          per_queue(lambda q: q.capacity.size))
    gauge("edgeagent_queue_items", "Items (spans, data points, log records) waiting in the queue.", labels,
          per_queue(lambda q: q.items))
    gauge("edgeagent_queue_bytes", "Bytes of compressed records waiting in the queue.", labels,
          per_queue(lambda q: q.bytes))
    gauge("edgeagent_queue_oldest_age_seconds", "Age of the oldest queued record.", labels, per_queue(oldest_age))
    directory = ("directory",)
    gauge("edgeagent_queue_storage_bytes", "Bytes of LMDB pages in use in a queue directory.", directory,
          lambda: [((s.directory,), float(s.pages_in_use)) for s in stores.values()])
    gauge("edgeagent_queue_storage_limit_bytes", "Disk budget of a queue directory (max_size_mib; 0 = none).",
          directory, lambda: [((s.directory,), float(s.limits.max_size)) for s in stores.values()])
    gauge("edgeagent_queue_file_bytes", "Size of the queue's data file (LMDB never shrinks it; compaction does).",
          directory, lambda: [((s.directory,), float(s.file_size())) for s in stores.values()])
    gauge("edgeagent_queue_compactions", "Compactions of the queue file since start.", directory,
          lambda: [((s.directory,), float(s.compactions)) for s in stores.values()])
    gauge("edgeagent_deadletter_entries", "Batches kept in the dead-letter store.", directory,
          lambda: [((s.directory,), float(s.deadletter_entries)) for s in stores.values()])
    gauge("edgeagent_upstream_online", "1 when the last send reached the upstream, 0 when it did not.",
          ("exporter",), lambda: [((e,), 1.0 if v else 0.0) for e, v in telemetry.upstream_online.items()
                                  if v is not None])


class DrainMeter:
    """Items delivered per second over the last minute."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._events: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, items: float) -> None:
        now = time.monotonic()
        self._events.append((now, items))
        self._trim(now)

    def rate(self) -> float:
        now = time.monotonic()
        self._trim(now)
        if not self._events:
            return 0.0
        span = max(now - self._events[0][0], 1.0)
        return sum(items for _, items in self._events) / span

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.WINDOW:
            self._events.popleft()


class DropLog:
    """Counts every dropped item by reason, and logs once per episode instead of once per item."""

    QUIET = 60.0  # seconds without drops that end an episode

    def __init__(self, metrics: Metrics):
        self.counter = metrics.counter("edgeagent_dropped_items_total", "Items dropped by an explicit policy "
                                       "(drop_oldest when full, max_age, purge).", ("exporter", "data_type", "reason"))
        self._episodes: dict[tuple[str, str], list[float]] = {}  # (queue, reason) -> [started, last, items]

    def record(self, queue: DurableQueue, reason: str, items: int, records: int) -> None:
        exporter_id, _, signal = queue.name.rpartition("/")
        self.counter.inc(items, exporter_id, signal, reason)
        now = time.monotonic()
        key = (queue.name, reason)
        episode = self._episodes.get(key)
        if episode is not None and now - episode[1] > self.QUIET:
            log.warning("dropping stopped", extra={"queue": queue.name, "reason": reason, "items": int(episode[2]),
                                                   "seconds": round(episode[1] - episode[0], 1)})
            episode = None
        if episode is None:
            log.warning("dropping queued data by policy; counted in edgeagent_dropped_items_total",
                        extra={"queue": queue.name, "reason": reason})
            episode = self._episodes[key] = [now, now, 0.0]
        episode[1] = now
        episode[2] += items
