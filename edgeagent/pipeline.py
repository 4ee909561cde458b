"""Builds and runs the graph that `service.pipelines` describes.

receivers -> (per signal) consumer -> each pipeline's processors -> durable queues -> senders -> exporters

A connector in a pipeline's exporters gets a durable queue and a sender like an exporter; the
pipelines that receive only from connectors are sub-pipelines (edgeagent.connectors.subpipeline):
the connector sends through their processors and exporters synchronously, so their exporters
have no queues of their own.

Start order: extensions, queue stores, exporters, connectors, senders, processors, receivers
last; stop in reverse, so every stage drains into a live consumer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from edgeagent import __version__, registry
from edgeagent.config.loader import AgentConfig
from edgeagent.config.types import split_endpoint
from edgeagent.connectors.failover import FailoverConnector
from edgeagent.connectors.subpipeline import SubPipeline
from edgeagent.errors import RetryableError, ShutdownError
from edgeagent.exporters.link import Link
from edgeagent.exporters.sender import BatchSettings, Sender
from edgeagent.extensions.file_storage import FileStorageConfig, resolve_directory
from edgeagent.extensions.metrics import Metrics
from edgeagent.processors.batch import BatchProcessor
from edgeagent.processors.memory_limiter import MemoryLimiter
from edgeagent.queue import admin
from edgeagent.queue.compaction import cleanup_compaction_leftovers
from edgeagent.queue.reader import DurableQueue
from edgeagent.queue.store import QueueStore
from edgeagent.runtime.control import ControlServer, socket_path
from edgeagent.signals import Payload, Signal
from sampler.stage import SamplingStage

log = logging.getLogger(__name__)
DEFAULT_STORAGE = ""


@dataclass
class RunningPipeline:
    id: str
    signal: Signal
    processors: list[Any]
    batch: BatchProcessor | None = None
    targets: list[tuple[QueueStore, list[DurableQueue]]] = field(default_factory=list)
    direct: list[Any] = field(default_factory=list)  # exporters with sending_queue disabled
    sampler: SamplingStage | None = None  # tail_sampling: it writes to the targets itself

    async def consume(self, payload: Payload) -> None:
        for processor in self.processors:
            payload = processor.process(payload)
            if payload is None:
                return
        key = self.batch.batch_key(payload.metadata) if self.batch is not None else b""
        if self.sampler is not None:
            await self.sampler.ingest(payload, key)
            return
        # serializing for a direct exporter adds deferred attributes, so the queues then get none to defer
        writes = [exporter_send_now(exporter, self.signal, payload.serialized()) for exporter in self.direct]
        body, attributes = payload.stored_form()  # deferred attributes are added when the record is read
        writes += [store.put(queues, body, payload.items, self.signal, key, attributes)
                   for store, queues in self.targets]
        if len(writes) == 1:
            await writes[0]
        else:
            await asyncio.gather(*writes)


async def exporter_send_now(exporter: Any, signal: Signal, body: bytes) -> None:
    """sending_queue disabled: one synchronous attempt; any failure is retryable for the client."""
    try:
        await exporter.send(signal, body)
    except RetryableError:
        raise
    except Exception as exc:
        raise RetryableError(f"upstream refused the data: {exc}", retry_after=5.0) from exc


class SignalConsumer:
    """What a receiver hands requests of one signal to: every pipeline that lists the receiver."""

    def __init__(self, agent: "Agent", receiver_id: str, signal: Signal, pipelines: list[RunningPipeline]):
        self.agent = agent
        self.receiver_id = receiver_id
        self.signal = signal
        self.pipelines = pipelines
        self.limiters = [p for pipeline in pipelines for p in pipeline.processors if isinstance(p, MemoryLimiter)]
        self._accepted = agent.metrics.counter(f"otelcol_receiver_accepted_{signal.item_name}",
                                               f"Number of {signal.item_name} successfully pushed into the pipeline.",
                                               ("receiver", "transport"))
        self._refused = agent.metrics.counter(f"otelcol_receiver_refused_{signal.item_name}",
                                              f"Number of {signal.item_name} that could not be pushed into the pipeline.",
                                              ("receiver", "transport"))

    @contextlib.contextmanager
    def admission(self, transport: str, body_bytes: int):
        """Hold a request's place in the memory budget while it is read and committed.

        Refuses (counted) before the body is read when the agent stops or memory is short."""
        reserved: list[tuple[MemoryLimiter, int]] = []
        try:
            if self.agent.stopping:
                raise ShutdownError("the agent is shutting down", retry_after=5.0)
            for limiter in self.limiters:
                reserved.append((limiter, limiter.reserve(body_bytes)))
        except RetryableError as exc:
            for limiter, cost in reserved:
                limiter.release(cost)
            self.agent.counter_inc("edgeagent_receiver_refused_requests", 1, self.receiver_id, transport,
                                   type(exc).__name__)
            raise
        try:
            yield
        finally:
            for limiter, cost in reserved:
                limiter.release(cost)

    def _admit(self) -> None:
        if self.agent.stopping:
            raise ShutdownError("the agent is shutting down", retry_after=5.0)
        for limiter in self.limiters:
            limiter.admit()

    async def consume(self, payload: Payload, transport: str) -> None:
        try:
            self._admit()
            last = len(self.pipelines) - 1
            if last == 0:
                await self.pipelines[0].consume(payload)
            else:
                await asyncio.gather(*(pipeline.consume(payload if index == last else payload.copy())
                                       for index, pipeline in enumerate(self.pipelines)))
        except BaseException:
            self._refused.inc(payload.items, self.receiver_id, transport)
            raise
        self._accepted.inc(payload.items, self.receiver_id, transport)


class Agent:
    """The running agent: owns every component and the order they start and stop in."""

    def __init__(self, config: AgentConfig, state_dir: str):
        self.config = config
        self.state_dir = state_dir
        self.read_only = False  # set by commands that only read the queue beside a stopped agent
        self.metrics = Metrics()
        self.stopping = False
        self.started = False
        self.started_at = time.time()
        self.failures: dict[str, str] = {}
        self.upstream_online: dict[str, bool | None] = {}
        self.extensions: dict[str, Any] = {}
        self.exporters: dict[str, Any] = {}
        self.connectors: dict[str, Any] = {}
        self.processors: dict[str, Any] = {}
        self.receivers: dict[str, Any] = {}
        self.stores: dict[str, QueueStore] = {}
        self.senders: list[Sender] = []
        self.pipelines: list[RunningPipeline] = []
        self._consumers: dict[tuple[str, Signal], SignalConsumer] = {}
        self._metrics_runner: web.AppRunner | None = None
        self._rebound: dict[str, tuple[int, int, float]] = {}
        self.drops = DropLog(self.metrics)
        self.drain = DrainMeter()
        self._control: ControlServer | None = None
        self._background: list[asyncio.Task] = []
        self._define_metrics()

    # ---- building --------------------------------------------------------------------------

    def _create(self, kind: str, component_id: str) -> Any:
        component = getattr(self.config, kind)[component_id]
        factory = registry.FACTORIES[kind][component.id.type]
        return factory.create(component_id, component.config, self)

    def _store_for(self, storage_id: str | None) -> QueueStore:
        key = storage_id or DEFAULT_STORAGE
        if key not in self.stores:
            if storage_id:
                settings: FileStorageConfig = self.config.extensions[storage_id].config
            else:
                settings = FileStorageConfig()
            directory = resolve_directory(settings, self.state_dir, storage_id or "queue")
            if not settings.create_directory and not os.path.isdir(directory):
                raise FileNotFoundError(f"file_storage directory {directory} does not exist; create it or set "
                                        f"create_directory: true")
            if settings.compaction.cleanup_on_start and not self.read_only:
                cleanup_compaction_leftovers(directory, settings.compaction.directory)
            store = QueueStore(directory, sync=settings.fsync, limits=settings.limits(), lock_timeout=settings.timeout,
                               compact_on_start=settings.compaction.on_start,
                               compaction_scratch=settings.compaction.directory,
                               on_corrupt=lambda message: self._count("edgeagent_queue_corruptions", 1, directory),
                               on_drop=self.drops.record,
                               on_quarantine=lambda queue, count: self._count("edgeagent_corrupt_records", count,
                                                                              queue.name),
                               on_salvage=lambda found, lost: (
                                   self._count("edgeagent_queue_salvaged_records", found, directory),
                                   self._count("edgeagent_queue_lost_records", lost, directory)),
                               control_socket=socket_path(self.state_dir), read_only=self.read_only)
            store.open()
            self.stores[key] = store
            if settings.compaction.on_rebound:
                compaction = settings.compaction
                self._rebound[key] = (compaction.rebound_needed_threshold_mib, compaction.rebound_trigger_threshold_mib,
                                      compaction.check_interval)
            log.info("queue storage open", extra={"directory": directory, "fsync": settings.fsync,
                                                  "backlog_items": sum(q.items for q in store.queues.values())})
        return self.stores[key]

    def _target(self, component_id: str) -> Any:
        """The exporter or connector a pipeline lists under exporters, created on first use."""
        kind, built = ("connectors", self.connectors) if component_id in self.config.connectors else \
            ("exporters", self.exporters)
        if component_id not in built:
            built[component_id] = self._create(kind, component_id)
        return built[component_id]

    def build(self) -> None:
        for ext_id in self.config.service.extensions:
            self.extensions[ext_id] = self._create("extensions", ext_id)
        exporter_batches: dict[tuple[str, Signal], BatchSettings | None] = {}
        sub_pipelines: dict[str, SubPipeline] = {}
        for spec in self.config.pipelines:
            processors = []
            for proc_id in spec.processors:
                if proc_id not in self.processors:
                    self.processors[proc_id] = self._create("processors", proc_id)
                processors.append(self.processors[proc_id])
            batcher = next((p for p in processors if isinstance(p, BatchProcessor)), None)
            batch = batcher.config if batcher else None
            plain = [p for p in processors if not isinstance(p, BatchProcessor)]
            sampler = next((p for p in plain if isinstance(p, SamplingStage)), None)
            after_sampler: list[Any] = []
            if sampler is not None:  # processors after tail_sampling run on the kept traces
                plain, after_sampler = plain[:plain.index(sampler)], plain[plain.index(sampler) + 1:]
            running = RunningPipeline(spec.id, spec.signal, plain, batcher, sampler=sampler)
            by_store: dict[str, list[DurableQueue]] = {}
            targets = [self._target(exp_id) for exp_id in spec.exporters]
            if any(rec_id in self.config.connectors for rec_id in spec.receivers):
                sub_pipelines[spec.id] = SubPipeline(spec.id, running.processors, targets, self)
            fed_by_receivers = any(rec_id not in self.config.connectors for rec_id in spec.receivers)
            for exp_id, exporter in zip(spec.exporters, targets) if fed_by_receivers else ():
                queue_config = exporter.config.sending_queue
                if not queue_config.enabled:
                    running.direct.append(exporter)
                    continue
                store = self._store_for(queue_config.storage)
                queue = store.queue(f"{exp_id}/{spec.signal.label}", spec.signal, queue_config.capacity())
                by_store.setdefault(queue_config.storage or DEFAULT_STORAGE, []).append(queue)
                key = (exp_id, spec.signal)
                settings = BatchSettings(batch.timeout, batch.send_batch_size, batch.send_batch_max_size) if batch else None
                if key in exporter_batches and exporter_batches[key] != settings:
                    log.warning("an exporter is fed by pipelines with different batch settings; using the first",
                                extra={"exporter": exp_id, "pipeline": spec.id})
                exporter_batches.setdefault(key, settings)
            running.targets = [(self.stores[key], queues) for key, queues in by_store.items()]
            if sampler is not None:
                self._attach_sampler(sampler, spec.id, running, after_sampler)
            self.pipelines.append(running)
        links: dict[str, Link] = {}
        for (exp_id, signal), settings in exporter_batches.items():
            exporter = self._target(exp_id)
            queue_config = exporter.config.sending_queue
            if exp_id not in links:  # one link per exporter: all its signals share the upstream's state
                signals = sum(1 for key in exporter_batches if key[0] == exp_id)
                links[exp_id] = Link(queue_config.num_consumers * signals, exporter.config.retry_on_failure,
                                     functools.partial(self.upstream_state, exp_id))
            store = self.stores[queue_config.storage or DEFAULT_STORAGE]
            queue = store.queues[f"{exp_id}/{signal.label}"]
            self.senders.append(Sender(exporter, queue, exporter.config.retry_on_failure, queue_config.num_consumers,
                                       settings, self, links[exp_id], queue_config.drain_order == "newest_first"))
        for spec, running in zip(self.config.pipelines, self.pipelines):
            for rec_id in spec.receivers:
                if rec_id in self.config.connectors:
                    continue
                if rec_id not in self.receivers:
                    self.receivers[rec_id] = self._create("receivers", rec_id)
                key = (rec_id, spec.signal)
                if key not in self._consumers:
                    self._consumers[key] = SignalConsumer(self, rec_id, spec.signal, [])
                    self._consumers[key].pipelines = []
                self._consumers[key].pipelines.append(running)
        for consumer in self._consumers.values():
            consumer.limiters = [p for pl in consumer.pipelines for p in pl.processors if isinstance(p, MemoryLimiter)]
        for connector in self.connectors.values():
            connector.attach(sub_pipelines)

    def _attach_sampler(self, sampler: SamplingStage, pipeline_id: str, running: RunningPipeline,
                        after: list[Any]) -> None:
        """Tail sampling moves kept traces to the export queues in the transaction that removes them
        from its buffer, so its buffer and those queues must share one storage."""
        if sampler.store is not None:
            raise ValueError(f"processors::{sampler.id} is used by two pipelines; give each pipeline its own "
                             f"(e.g. tail_sampling/{pipeline_id.replace('/', '_')})")
        if running.direct or len(running.targets) != 1:
            raise ValueError(f"service::pipelines::{pipeline_id}: with tail_sampling every exporter needs "
                             f"sending_queue enabled, all with the same sending_queue::storage")
        store, queues = running.targets[0]
        sampler.attach(store, queues, after)

    # ---- the host interface components use -------------------------------------------------

    def consumer(self, receiver_id: str, signal: Signal) -> SignalConsumer | None:
        return self._consumers.get((receiver_id, signal))

    def counter_inc(self, name: str, amount: float, *labels: str) -> None:
        self._count(name, amount, *labels)
        if name.startswith("otelcol_exporter_sent_"):
            self.drain.add(amount)

    def count(self, name: str, amount: float, *labels: str) -> None:
        """Count without measuring queue drain (sends of sub-pipelines drain no queue of their own)."""
        self._count(name, amount, *labels)

    def _count(self, name: str, amount: float, *labels: str) -> None:
        self.metrics.counters[name].inc(amount, *labels)

    def upstream_state(self, exporter_id: str, online: bool) -> None:
        previous = self.upstream_online.get(exporter_id)
        self.upstream_online[exporter_id] = online
        if previous is not None and previous != online:
            log.log(logging.INFO if online else logging.WARNING,
                    "upstream is %s", "reachable again" if online else "unreachable; data is kept in the queue",
                    extra={"exporter": exporter_id})

    def _background_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task stopped unexpectedly", exc_info=task.exception(), extra={"task": task.get_name()})
            self.component_failed(task.get_name(), str(task.exception()))

    def component_failed(self, path: str, message: str) -> None:
        self.failures[path] = message

    def ready(self) -> bool:
        return self.started and not self.stopping and not self.failures

    def health(self) -> dict[str, Any]:
        queues = {}
        now_ms = time.time() * 1000
        for store in self.stores.values():
            for queue in store.queues.values():
                queues[queue.name] = {"entries": queue.entries, "items": queue.items, "bytes": queue.bytes,
                                      "oldest_age_seconds": round((now_ms - queue.oldest_ms) / 1000, 3)
                                      if queue.oldest_ms else 0.0}
        exporters = {}
        for exp_id, exporter in self.exporters.items():
            state = self.upstream_online.get(exp_id)
            exporters[exp_id] = {
                "endpoint": exporter.describe() if exporter.configured else None,
                "upstream": ("not configured" if not exporter.configured else
                             "unknown" if state is None else "online" if state else "offline"),
            }
        limiters = {pid: p.health() for pid, p in self.processors.items() if isinstance(p, MemoryLimiter)}
        samplers = {pid: p.health() for pid, p in self.processors.items() if isinstance(p, SamplingStage)}
        connectors = {cid: c.health() for cid, c in self.connectors.items()}
        return {
            "healthy": self.started and not self.failures,
            "ready": self.ready(),
            "version": __version__,
            "upSince": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "uptime": f"{time.time() - self.started_at:.1f}s",
            "exporters": exporters,
            "connectors": connectors,
            "queues": queues,
            "dead_letters": sum(store.deadletter_entries for store in self.stores.values()),
            "memory_limiter": limiters,
            "tail_sampling": samplers,
            "failures": self.failures,
        }

    def status(self) -> dict[str, Any]:
        """What `edgeagent status` prints: health details plus drain rate and time to empty."""
        details = self.health()
        backlog = sum(queue["items"] for queue in details["queues"].values())
        rate = self.drain.rate()
        details["backlog_items"] = backlog
        details["drain_items_per_second"] = round(rate, 1)
        details["eta_seconds"] = round(backlog / rate, 1) if rate > 0 else (0.0 if not backlog else None)
        return details

    def control_handlers(self) -> dict[str, Any]:
        stores = list(self.stores.values())

        async def status(params: dict) -> Any:
            return self.status()

        async def stats(params: dict) -> Any:
            return admin.stats(stores)

        async def peek(params: dict) -> Any:
            return await asyncio.to_thread(admin.peek, stores, int(params.get("n", 10)))

        async def export(params: dict) -> Any:
            return await asyncio.to_thread(lambda: b"".join(admin.export(stores, params.get("format", "otlp-json"))))

        async def purge(params: dict) -> Any:
            return {"purged_records": await admin.purge(stores, params.get("queue"))}

        async def compact(params: dict) -> Any:
            return await admin.compact(stores)

        async def dead_letter_list(params: dict) -> Any:
            return await asyncio.to_thread(admin.dead_letters, stores, int(params.get("n", 0)))

        async def dead_letter_export(params: dict) -> Any:
            return await asyncio.to_thread(lambda: b"".join(admin.dead_letter_bodies(stores)))

        async def dead_letter_replay(params: dict) -> Any:
            return {"replayed": await admin.replay(stores, params.get("seqs"))}

        async def dead_letter_purge(params: dict) -> Any:
            return {"purged": await admin.purge_dead_letters(stores, params.get("seqs"))}

        return {"status": status, "stats": stats, "peek": peek, "export": export, "purge": purge,
                "compact": compact, "dead-letter-list": dead_letter_list, "dead-letter-export": dead_letter_export,
                "dead-letter-replay": dead_letter_replay, "dead-letter-purge": dead_letter_purge}

    # ---- metrics -----------------------------------------------------------------------------

    def _define_metrics(self) -> None:
        m = self.metrics
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
        m.counter("edgeagent_receiver_refused_requests", "Requests refused before they were read (memory limiter, "
                  "shutdown).", ("receiver", "transport", "reason"))
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
        m.gauge("otelcol_exporter_queue_size", "Current size of the retry queue (in the unit of its sizer).",
                ("exporter", "data_type"), lambda: self._queue_values(lambda q: q.capacity_used()))
        m.gauge("otelcol_exporter_queue_capacity", "Fixed capacity of the retry queue (in the unit of its sizer).",
                ("exporter", "data_type"), lambda: self._queue_values(lambda q: q.capacity.size))
        m.gauge("edgeagent_queue_items", "Items (spans, data points, log records) waiting in the queue.",
                ("exporter", "data_type"), lambda: self._queue_values(lambda q: q.items))
        m.gauge("edgeagent_queue_bytes", "Bytes of compressed records waiting in the queue.", ("exporter", "data_type"),
                lambda: self._queue_values(lambda q: q.bytes))
        m.gauge("edgeagent_queue_oldest_age_seconds", "Age of the oldest queued record.", ("exporter", "data_type"),
                lambda: self._queue_values(lambda q: max(0.0, time.time() - q.oldest_ms / 1000) if q.oldest_ms else 0.0))
        m.gauge("edgeagent_queue_storage_bytes", "Bytes of LMDB pages in use in a queue directory.", ("directory",),
                lambda: [((s.directory,), float(s.pages_in_use)) for s in self.stores.values()])
        m.gauge("edgeagent_queue_storage_limit_bytes", "Disk budget of a queue directory (max_size_mib; 0 = none).",
                ("directory",), lambda: [((s.directory,), float(s.limits.max_size)) for s in self.stores.values()])
        m.gauge("edgeagent_queue_file_bytes", "Size of the queue's data file (LMDB never shrinks it; compaction does).",
                ("directory",), lambda: [((s.directory,), float(s.file_size())) for s in self.stores.values()])
        m.gauge("edgeagent_queue_compactions", "Compactions of the queue file since start.", ("directory",),
                lambda: [((s.directory,), float(s.compactions)) for s in self.stores.values()])
        m.gauge("edgeagent_deadletter_entries", "Batches kept in the dead-letter store.", ("directory",),
                lambda: [((s.directory,), s.deadletter_entries) for s in self.stores.values()])
        m.gauge("edgeagent_upstream_online", "1 when the last send reached the upstream, 0 when it did not.",
                ("exporter",), lambda: [((e,), 1.0 if v else 0.0) for e, v in self.upstream_online.items() if v is not None])
        m.gauge("edgeagent_upstream_configured", "1 when the exporter has an upstream endpoint, 0 when it only buffers.",
                ("exporter",), lambda: [((e,), 1.0 if x.configured else 0.0) for e, x in self.exporters.items()])
        m.gauge("edgeagent_failover_active_level", "Priority level a failover connector sends to (0 = the first).",
                ("connector",), lambda: [((cid,), float(c.active_level)) for cid, c in self.connectors.items()
                                         if isinstance(c, FailoverConnector)])
        m.gauge("edgeagent_memory_limiter_refusing", "1 while the memory limiter refuses new data.", ("processor",),
                lambda: [((pid,), 1.0 if p.refusing else 0.0) for pid, p in self.processors.items()
                         if isinstance(p, MemoryLimiter)])

    def _queue_values(self, read: Any) -> list[tuple[tuple[str, ...], float]]:
        values = []
        for store in self.stores.values():
            for queue in store.queues.values():
                exporter_id, _, signal = queue.name.rpartition("/")
                values.append(((exporter_id, signal), float(read(queue))))
        return values

    async def _serve_metrics(self) -> None:
        endpoint = self.config.service.telemetry.metrics.endpoint()
        if endpoint is None:
            return

        async def handle(request: web.Request) -> web.Response:
            return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/metrics", handle)
        self._metrics_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._metrics_runner.setup()
        host, port = split_endpoint(endpoint, 8888)
        await web.TCPSite(self._metrics_runner, host, port, reuse_address=True).start()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        for extension in self.extensions.values():
            await extension.start()
        await self._serve_metrics()
        for key, store in self.stores.items():
            store.start()
            if key in self._rebound:
                task = asyncio.create_task(store.compact_on_rebound(*self._rebound[key]), name=f"rebound:{key}")
                task.add_done_callback(self._background_done)
                self._background.append(task)
        self._control = ControlServer(socket_path(self.state_dir), self.control_handlers())
        await self._control.start()
        for exporter in self.exporters.values():
            await exporter.start()
        for connector in self.connectors.values():
            await connector.start()
        for sender in self.senders:
            if sender.exporter.configured:
                await sender.start()
        for exp_id, exporter in self.exporters.items():
            if not exporter.configured:
                log.warning("no upstream is configured: data is buffered durably and will be sent once an "
                            "upstream is set (--upstream URL or EDGEAGENT_UPSTREAM)", extra={"exporter": exp_id})
        for processor in self.processors.values():
            await processor.start()
        for receiver in self.receivers.values():
            await receiver.start()
        self.started = True
        backlog = {q.name: q.items for s in self.stores.values() for q in s.queues.values() if q.items}
        log.info("edgeagent is ready", extra={"version": __version__, "backlog_items": backlog})

    async def shutdown(self) -> None:
        """Stop receivers, finish pending commits, return leases, close storage. Idempotent."""
        self.stopping = True
        for receiver in self.receivers.values():
            await _quietly(receiver.shutdown(), "receiver")
        for processor in self.processors.values():
            await _quietly(processor.shutdown(), "processor")
        if self._control is not None:
            await _quietly(self._control.shutdown(), "control socket")
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for sender in self.senders:
            await _quietly(sender.shutdown(), "sender")
        for connector in self.connectors.values():
            await _quietly(connector.shutdown(), "connector")
        for exporter in self.exporters.values():
            await _quietly(exporter.shutdown(), "exporter")
        for store in self.stores.values():
            await _quietly(store.close(), "queue store")
        if self._metrics_runner is not None:
            runner, self._metrics_runner = self._metrics_runner, None
            await _quietly(runner.cleanup(), "metrics server")
        for extension in self.extensions.values():
            await _quietly(extension.shutdown(), "extension")


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


async def _quietly(awaitable: Any, what: str) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout=5.0)
    except Exception as exc:
        log.error("%s did not stop cleanly", what, exc_info=exc)
