"""The service's own telemetry: otelcol-named counters, queue gauges, drops, drain rate, upstream state.

Components count through the Host (`counter_inc`, `count`); gauges read live state at scrape
time. `service::telemetry::metrics` says where they go: a /metrics server per pull reader, a push
every interval per periodic reader (edgeagent.service.periodic, imported only when one is configured:
it brings the otlp exporters' clients).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgeagent.config.service import IncludeExclude, MetricsConfig, as_label
from edgeagent.config.types import split_endpoint
from edgeagent.extensions.metrics import Derived, Metrics
from edgeagent.http1.server import Handler, Request, Response, Server
from edgeagent.queue import record
from edgeagent.queue.ops import WriterQueue
from edgeagent.queue.reader import DurableQueue
from edgeagent.runtime import supervise
from edgeagent.service.consumers import Processor
from edgeagent.service.process import define_process_metrics
from edgeagent.service.storage import Stores
from edgeagent.signals import Payload, Signal

if TYPE_CHECKING:
    from edgeagent.service.periodic import PeriodicReader

log = logging.getLogger(__name__)
METRICS_READ_TIMEOUT = 5.0  # seconds; otelcol's Prometheus server (ReadTimeout, WriteTimeout)
METRICS_WRITE_TIMEOUT = 10.0
Samples = list[tuple[tuple[str, ...], float]]
# what otelcol 0.165 serves only at level detailed (its service's default metric views): the HTTP
# and gRPC instrumentation, the processors' durations, the sizes of what enters a sending queue
DETAILED_ONLY = frozenset(("http_server_request_duration", "rpc_server_call_duration", "http_client_request_duration",
                           "rpc_client_call_duration", "otelcol_processor_internal_duration",
                           "otelcol_exporter_enqueue_size", "otelcol_exporter_enqueue_size_bytes"))


class Telemetry:
    """Counters every component may add to, and what the service knows about its upstreams."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.drain = DrainMeter()
        self.drops = DropLog(self.metrics)
        self.upstream_online: dict[str, bool | None] = {}
        self.problems: dict[str, str] = {}  # exporter or connector id -> its last failure, until it delivers
        self.exporters: Callable[[], Mapping[str, Any]] = dict  # the running graph's exporters, by id
        self._servers: list[Server] = []
        self._readers: list[PeriodicReader] = []
        _define_counters(self.metrics, self._destination)
        define_process_metrics(self.metrics)

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
            # why, when it went away: the upstream's answer or the agent's own lack (no descriptor left)
            problem = None if online else self.problems.get(exporter_id)
            why = {"error": problem} if problem else {}
            log.log(logging.INFO if online else logging.WARNING,
                    "upstream is %s", "reachable again" if online else "unreachable; data is kept in the queue",
                    extra={"exporter": exporter_id, **why})

    def exporter_problem(self, exporter_id: str, problem: str | None) -> None:
        if problem is None:
            self.problems.pop(exporter_id, None)
        else:
            self.problems[exporter_id] = problem

    def describe(self, resource: Mapping[str, str | None]) -> None:
        """service::telemetry::resource: its attributes on target_info, over the agent's own (None removes one)."""
        for name, value in resource.items():
            if value is None:
                self.metrics.info.pop(name, None)
            else:
                self.metrics.info[name] = value

    def watch_exporters(self, exporters: Callable[[], Mapping[str, Any]]) -> None:
        """Where the exporters send, for the server labels of otelcol's exporter counters."""
        self.exporters = exporters

    def _destination(self, signal: Signal) -> Derived:
        def labels(own: tuple[str, ...]) -> tuple[str, ...]:
            exporter = self.exporters().get(own[0])
            return destination(getattr(exporter, "config", None), signal)
        return Derived(("server_address", "server_port", "url_path"), labels)

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...],
              read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        self.metrics.gauge(name, documentation, labelnames, read)

    def watch_stores(self, stores: Stores) -> None:
        """Gauges of every queue and queue directory."""
        define_queue_gauges(self, stores)

    async def serve(self, settings: MetricsConfig) -> None:
        leave_out = frozenset() if settings.level == "detailed" else DETAILED_ONLY
        pushes = self.metrics.counters["edgeagent_telemetry_metrics_pushes"]
        for at, periodic in settings.pushes():
            from edgeagent.service.periodic import PeriodicReader

            reader = PeriodicReader(f"readers::{at}::periodic", periodic, self.metrics, leave_out, pushes, self)
            await reader.start()
            self._readers.append(reader)
        for endpoint, constant in settings.servers():  # a server per prometheus reader
            # otelcol's Prometheus server: ReadTimeout 5 s (the wait for a head here), WriteTimeout 10 s
            server = Server(wait_for_request=METRICS_READ_TIMEOUT, write_timeout=METRICS_WRITE_TIMEOUT)
            server.get("/metrics", self._handler(leave_out, constant))
            self._servers.append(server)
            host, port = split_endpoint(endpoint, 8888)
            await server.listen(host=host, port=port)

    def _handler(self, leave_out: frozenset[str], constant: IncludeExclude | None) -> Handler:
        async def handle(request: Request) -> Response:
            labels = {} if constant is None else {
                name: value for name, value in self.metrics.info.items() if constant.admits(as_label(name))}
            return Response(body=self.metrics.render(leave_out, labels), content_type="text/plain; charset=utf-8")
        return handle

    async def stop_serving(self) -> None:
        """Stop the periodic readers, each after a last push (the queues' gauges keep their last values), and
        the /metrics servers."""
        readers, self._readers = self._readers, []
        await asyncio.gather(*(reader.stop() for reader in readers))
        servers, self._servers = self._servers, []
        for server in servers:
            await server.stop(grace=1.0)


def destination(config: Any, signal: Signal) -> tuple[str, str, str]:
    """server.address, server.port and url.path of an exporter's requests, as otelcol labels its counters."""
    url_of = getattr(config, "url", None)
    if callable(url_of):  # otlphttp: a URL per signal
        url = urlsplit(url_of(signal) or "")
        default_port = 443 if url.scheme == "https" else 80
        return url.hostname or "", str(url.port or default_port) if url.hostname else "", url.path
    endpoint = getattr(config, "endpoint", None)
    if isinstance(endpoint, str) and endpoint:  # otlp (gRPC): host:port, perhaps with a scheme
        url = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
        return url.hostname or "", str(url.port or ""), ""
    return "", "", ""


def _define_counters(m: Metrics, destination_of: Callable[[Signal], Derived]) -> None:
    for signal in Signal:
        items = signal.item_name
        m.counter(f"otelcol_exporter_sent_{items}", f"Number of {items} successfully sent to destination.",
                  ("exporter",), destination_of(signal))
        m.counter(f"otelcol_exporter_send_failed_{items}", f"Number of {items} in failed attempts to send to "
                  "destination (kept in the queue unless permanently rejected).", ("exporter",),
                  destination_of(signal))
        m.counter(f"edgeagent_exporter_rejected_{items}", f"Number of {items} the upstream rejected in a partial "
                  "success.", ("exporter",))
    for name in ("spans", "logs", "datapoints"):
        m.counter(f"otelcol_processor_filter_{name}_filtered", f"Number of {name} dropped by the filter processor.",
                  ("filter",))
    m.counter("edgeagent_telemetry_metrics_pushes", "Pushes of the agent's own metrics by a periodic reader, by "
              "result: delivered or failed.", ("reader", "result"))
    m.counter("edgeagent_receiver_refused_requests", "Requests refused before or while they were read (memory "
              "limiter, shutdown).", ("receiver", "transport", "reason"))
    m.counter("edgeagent_receiver_client_disconnects", "Requests whose client went away before they were answered.",
              ("receiver", "transport"))
    m.counter("edgeagent_exporter_unexpected_errors", "Sends that failed with an unexpected error; the data "
              "stayed queued.", ("exporter",))
    m.counter(supervise.ERRORS, "Failed steps of a periodic background task (it goes on at its next interval), "
              "and background tasks that ended unexpectedly (they start again).", ("task",))
    m.counter("edgeagent_deadletter_items", "Items moved to the dead-letter store after a permanent rejection.",
              ("exporter", "data_type"))
    m.counter("edgeagent_corrupt_records", "Queue records that did not decode and were moved to the dead-letter "
              "store.", ("queue",))
    m.counter("edgeagent_queue_corruptions", "Queue data files that did not open and were moved aside.",
              ("directory",))
    m.counter("edgeagent_queue_salvaged_records", "Records read back from a queue data file that did not open.",
              ("directory",))
    m.counter("edgeagent_queue_lost_records", "Records of a queue data file that did not open that could not be "
              "read back.", ("directory",))


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
        return record.age_seconds(queue.oldest_ms, time.time() * 1000)

    labels = ("exporter", "data_type")
    gauge = telemetry.gauge
    gauge("otelcol_exporter_queue_size", "Current size of the retry queue (in the unit of its sizer).", labels,
          per_queue(lambda q: q.capacity_used()))
    gauge("otelcol_exporter_queue_capacity", "Fixed capacity of the retry queue (in the unit of its sizer).", labels,
          per_queue(lambda q: q.capacity.size))
    gauge("otelcol_exporter_in_flight_requests", "Records leased to the exporter's senders: in flight to the "
          "upstream or waiting to be retried.", labels, per_queue(lambda q: q.entries - q.available_entries))
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
    telemetry.metrics.observed_counter(
        "edgeagent_queue_compaction_failures", "Compactions of the queue file that failed (the queue went on with "
        "the file in place).", directory,
        lambda: [((s.directory,), float(s.compaction_failures)) for s in stores.values()])
    telemetry.metrics.observed_counter(
        "edgeagent_queue_writer_errors", "Commits of the queue's writer that failed unexpectedly (their requests "
        "failed; the writer went on).", directory,
        lambda: [((s.directory,), float(s.writer_errors)) for s in stores.values()])
    telemetry.metrics.observed_counter(
        "edgeagent_queue_storage_errors", "Commits the queue's filesystem refused other than for lack of room "
        "(reason read_only, io_error, quota): their new data was refused, their deletes wait.",
        (*directory, "reason"),
        lambda: [((s.directory, reason), float(count)) for s in stores.values()
                 for reason, count in s.storage_errors.items()])
    gauge("edgeagent_deadletter_entries", "Batches kept in the dead-letter store.", directory,
          lambda: [((s.directory,), float(s.deadletter_entries)) for s in stores.values()])
    gauge("edgeagent_upstream_online", "1 when the last send reached the upstream, 0 when it did not.",
          ("exporter",), lambda: [((e,), 1.0 if v else 0.0) for e, v in telemetry.upstream_online.items()
                                  if v is not None])
    _define_enqueue_failed(telemetry.metrics, stores)


def _define_enqueue_failed(metrics: Metrics, stores: Stores) -> None:
    """Items a queue refused (full, with full_policy block), counted by the queue's writer."""
    def refused(signal: Signal) -> Callable[[], Samples]:
        return lambda: [((queue.name.rpartition("/")[0],), float(queue.refused_items))
                        for queue in stores.queues() if queue.signal is signal]

    for signal in Signal:
        metrics.observed_counter(f"otelcol_exporter_enqueue_failed_{signal.item_name}",
                                 f"Number of {signal.item_name} that failed to be added to the sending queue.",
                                 ("exporter",), refused(signal))


# otelcol's bucket boundaries for the request sizes handed to a sending queue, in items and in bytes
ENQUEUE_ITEMS_BUCKETS = (10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0,
                         6000.0, 7000.0, 8000.0, 9000.0, 10000.0, 20000.0, 30000.0, 50000.0, 100000.0)
ENQUEUE_BYTES_BUCKETS = tuple(float(128 << shift) for shift in range(18))


class PipelineMeter:
    """otelcol's telemetry of one pipeline: items into and out of each processor, the time each call
    takes, and the sizes of the requests handed to each exporter's queue.

    The memory limiter refuses before a request is read; whatever reaches it is accepted."""

    def __init__(self, metrics: Metrics, signal: Signal, limiter_ids: set[str]):
        labels = ("processor", "otel_signal")
        self.signal = signal.label
        self.limiter_ids = limiter_ids
        self.incoming = metrics.counter("otelcol_processor_incoming_items", "Number of items passed to the "
                                        "processor.", labels)
        self.outgoing = metrics.counter("otelcol_processor_outgoing_items", "Number of items emitted from the "
                                        "processor.", labels)
        self.duration = metrics.histogram("otelcol_processor_internal_duration", "Duration of time taken to "
                                          "process a batch of telemetry data through the processor (seconds).",
                                          labels)
        self.accepted = metrics.counter(f"otelcol_processor_memory_limiter_accepted_{signal.item_name}",
                                        f"Number of {signal.item_name} successfully pushed into the next component "
                                        "in the pipeline.", ("processor",))
        self.enqueue_items = metrics.histogram("otelcol_exporter_enqueue_size", "Number of units in the request "
                                               "added to the sending queue.", ("exporter",), ENQUEUE_ITEMS_BUCKETS)
        self.enqueue_bytes = metrics.histogram("otelcol_exporter_enqueue_size_bytes", "Number of bytes in the "
                                               "request added to the sending queue.", ("exporter",),
                                               ENQUEUE_BYTES_BUCKETS)

    def run(self, processor: Processor, payload: Payload) -> Payload | None:
        items = payload.items
        started = time.perf_counter()
        result = processor.process(payload)
        self.duration.observe(time.perf_counter() - started, processor.id, self.signal)
        out = result.items if result is not None else 0
        self.incoming.inc(items, processor.id, self.signal)
        self.outgoing.inc(out, processor.id, self.signal)
        if processor.id in self.limiter_ids:
            self.accepted.inc(out, processor.id)
        return result

    def enqueue(self, queues: list[DurableQueue], items: int, size: int) -> None:
        for queue in queues:
            exporter_id = queue.name.rpartition("/")[0]
            self.enqueue_items.observe(items, exporter_id)
            self.enqueue_bytes.observe(size, exporter_id)


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
        self.counter = metrics.counter("edgeagent_dropped_items", "Items dropped by an explicit policy "
                                       "(drop_oldest when full, max_age, purge).", ("exporter", "data_type", "reason"))
        self._episodes: dict[tuple[str, str], list[float]] = {}  # (queue, reason) -> [started, last, items]

    def record(self, queue: WriterQueue, reason: str, items: int, records: int) -> None:
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
