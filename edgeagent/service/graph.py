"""Builds the graph that `service.pipelines` describes: components, queues, senders, consumers.

Each pipeline's processors are placed by the role their factory declares (edgeagent.component.
Role), never by their class: transforms run in order, the batch processor's settings go to the
senders, a memory limiter also guards admission, and a stage (tail_sampling) takes over the rest
of its pipeline. Exporters with `sending_queue` get a durable queue per signal and a sender; the
pipelines that receive only from connectors become sub-pipelines the connector sends through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeagent import registry
from edgeagent.component import ComponentId, Role
from edgeagent.config.loader import AgentConfig, Pipeline
from edgeagent.connectors.subpipeline import SubPipeline
from edgeagent.exporters.chain import ExportChain
from edgeagent.exporters.link import Link
from edgeagent.exporters.reach import Address, signal_addresses
from edgeagent.exporters.sender import BatchSettings, Sender
from edgeagent.queue.reader import DurableQueue
from edgeagent.service.consumers import Limiter, RunningPipeline, SignalConsumer
from edgeagent.service.delivery import Waits
from edgeagent.service.host import Host
from edgeagent.service.storage import DEFAULT_STORAGE, Stores
from edgeagent.service.telemetry import PipelineMeter
from edgeagent.signals import Signal

log = logging.getLogger(__name__)


@dataclass
class _Placed:
    """A pipeline's processors sorted by role."""

    before: list[Any] = field(default_factory=list)  # run in the pipeline, before any stage
    after: list[Any] = field(default_factory=list)  # run by the stage on what it keeps
    limiters: list[Limiter] = field(default_factory=list)
    batch: Any = None
    stage: Any = None
    stage_id: str = ""


class Graph:
    """Every component of one config, wired; start and stop belong to the Service."""

    def __init__(self, config: AgentConfig, host: Host, stores: Stores, stopping: Callable[[], bool]):
        self.config = config
        self.host = host
        self.stopping = stopping
        self.stores = stores
        self.extensions: dict[str, Any] = {}
        self.processors: dict[str, Any] = {}
        self.roles: dict[str, Role] = {}
        self.exporters: dict[str, Any] = {}
        self.connectors: dict[str, Any] = {}
        self.receivers: dict[str, Any] = {}
        self.senders: list[Sender] = []
        self.pipelines: list[RunningPipeline] = []
        self.consumers: dict[tuple[str, Signal], SignalConsumer] = {}
        self.queues: set[DurableQueue] = set()  # the queues its senders read; others in its stores are not
        self.stages: dict[str, Any] = {}  # tail_sampling processors by id, each with its buffer (store, table)
        self._link_states: dict[str, dict[tuple[str, tuple[Address, ...]], bool]] = {}  # exporter -> its links'

    def of_type(self, kind: str, type_name: str) -> dict[str, Any]:
        """The built components of one kind whose YAML type is `type_name`."""
        built: dict[str, Any] = getattr(self, kind)
        return {cid: c for cid, c in built.items() if ComponentId.parse(cid).type == type_name}

    def of_role(self, role: Role) -> dict[str, Any]:
        return {pid: p for pid, p in self.processors.items() if self.roles[pid] is role}

    # ---- building --------------------------------------------------------------------------

    def build(self) -> None:
        for ext_id in self.config.service.extensions:
            self.extensions[ext_id] = self._create("extensions", ext_id)
        batches: dict[tuple[str, Signal], BatchSettings | None] = {}
        sub_pipelines: dict[str, SubPipeline] = {}
        feeds: list[tuple[Pipeline, RunningPipeline, list[Limiter]]] = []
        for spec in self.config.pipelines:
            running, placed = self._pipeline(spec)
            targets = [self._target(exp_id) for exp_id in spec.exporters]
            if any(rec_id in self.config.connectors for rec_id in spec.receivers):
                sub_pipelines[spec.id] = SubPipeline(spec.id, running.processors, targets, self.host)
            if any(rec_id not in self.config.connectors for rec_id in spec.receivers):
                self._queue_exports(spec, running, targets, batches)
            if placed.stage is not None:
                self._attach_stage(placed, spec.id, running)
            self.pipelines.append(running)
            feeds.append((spec, running, placed.limiters))
        for connector in self.connectors.values():  # before the senders: a connector's link watches its levels
            connector.attach(sub_pipelines)
        self._senders(batches)
        for spec, running, limiters in feeds:
            self._feed(spec, running, limiters)

    def _create(self, kind: str, component_id: str) -> Any:
        component = getattr(self.config, kind)[component_id]
        factory = registry.FACTORIES[kind][component.id.type]
        if kind == "processors":
            self.roles[component_id] = factory.role
        return factory.create(component_id, component.config, self.host)

    def _target(self, component_id: str) -> Any:
        """The exporter or connector a pipeline lists under exporters, created on first use."""
        kind, built = ("connectors", self.connectors) if component_id in self.config.connectors else \
            ("exporters", self.exporters)
        if component_id not in built:
            built[component_id] = self._create(kind, component_id)
        return built[component_id]

    def _place(self, spec: Pipeline) -> _Placed:
        placed = _Placed()
        for proc_id in spec.processors:
            if proc_id not in self.processors:
                self.processors[proc_id] = self._create("processors", proc_id)
            processor, role = self.processors[proc_id], self.roles[proc_id]
            if role is Role.BATCH:
                placed.batch = processor
            elif role is Role.STAGE and placed.stage is None:
                placed.stage, placed.stage_id = processor, proc_id
            elif role is Role.ADMISSION and placed.stage is not None:
                # wherever it is listed, a memory limiter refuses at the receivers (it runs, and is counted,
                # on what they take in): never on the traces the stage keeps, which were answered OK
                # (otelcol's refusal there drops them)
                placed.before.append(processor)
                placed.limiters.append(processor)
            elif placed.stage is not None:  # processors after tail_sampling run on the kept traces
                placed.after.append(processor)
            else:
                placed.before.append(processor)
                if role is Role.ADMISSION:
                    placed.limiters.append(processor)
        return placed

    def _pipeline(self, spec: Pipeline) -> tuple[RunningPipeline, _Placed]:
        placed = self._place(spec)
        meter = PipelineMeter(self.host.metrics, spec.signal, {limiter.id for limiter in placed.limiters})
        return RunningPipeline(spec.id, spec.signal, placed.before, placed.batch, stage=placed.stage,
                               meter=meter), placed

    def _queue_exports(self, spec: Pipeline, running: RunningPipeline, targets: list[Any],
                       batches: dict[tuple[str, Signal], BatchSettings | None]) -> None:
        """A durable queue per exporter and signal; exporters without sending_queue are sent to at once."""
        batch = running.batch.config if running.batch is not None else None
        settings = BatchSettings(batch.timeout, batch.send_batch_size, batch.send_batch_max_size) if batch else None
        by_store: dict[str, list[DurableQueue]] = {}
        blocking: set[DurableQueue] = set()
        watched: set[DurableQueue] = set()
        for exp_id, exporter in zip(spec.exporters, targets, strict=True):
            queue_config = exporter.config.sending_queue
            if not queue_config.enabled:
                timeout = getattr(exporter.config, "timeout", None)  # the debug exporter has none
                running.direct.append(ExportChain(exporter, spec.signal, self.host, timeout=timeout))
                continue
            store = self.stores.get(queue_config.storage)
            queue = store.queue(f"{exp_id}/{spec.signal.label}", spec.signal, queue_config.capacity())
            queue.capacity = queue_config.capacity()  # a queue opened before (an earlier config) takes this one's
            self.queues.add(queue)
            by_store.setdefault(queue_config.storage or DEFAULT_STORAGE, []).append(queue)
            if queue_config.block_on_overflow:
                blocking.add(queue)
            if queue_config.wait_for_result:
                watched.add(queue)
            key = (exp_id, spec.signal)
            if queue_config.batch is not None:  # the exporter's own batching wins over the pipeline's
                batches.setdefault(key, queue_config.batch.settings())
                continue
            if key in batches and batches[key] != settings:
                log.warning("an exporter is fed by pipelines with different batch settings; using the first",
                            extra={"exporter": exp_id, "pipeline": spec.id})
            batches.setdefault(key, settings)
        running.targets = [(self.stores.get(key or None), queues) for key, queues in by_store.items()]
        running.waits = Waits(frozenset(blocking), frozenset(watched))

    def _attach_stage(self, placed: _Placed, pipeline_id: str, running: RunningPipeline) -> None:
        """Tail sampling moves kept traces to the export queues in the transaction that removes them
        from its buffer, so its buffer and those queues must share one storage."""
        if placed.stage_id in self.stages:
            raise ValueError(f"processors::{placed.stage_id} is used by two pipelines; give each pipeline its own "
                             f"(e.g. tail_sampling/{pipeline_id.replace('/', '_')})")
        if running.direct or len(running.targets) != 1:
            raise ValueError(f"service::pipelines::{pipeline_id}: with tail_sampling every exporter needs "
                             f"sending_queue enabled, all with the same sending_queue::storage")
        self.stages[placed.stage_id] = placed.stage
        store, queues = running.targets[0]
        placed.stage.attach(store, queues, placed.after)

    def _senders(self, batches: dict[tuple[str, Signal], BatchSettings | None]) -> None:
        """A sender per exporter and signal. The signals an exporter sends to the same upstream share one
        link (its state, Retry-After, the probe while it is away); a signal sent to a host of its own
        (otlp_http's logs_endpoint on another backend) has a link of its own, so that one backend's
        outage or Retry-After never holds back what goes to another."""
        routes = {key: (key[0], tuple(signal_addresses(self._target(key[0]), key[1]))) for key in batches}
        links: dict[tuple[str, tuple[Address, ...]], Link] = {}
        for (exp_id, signal), settings in batches.items():
            exporter = self._target(exp_id)
            queue_config = exporter.config.sending_queue
            route = routes[(exp_id, signal)]
            if route not in links:
                signals = sum(1 for other in routes.values() if other == route)
                links[route] = Link(queue_config.num_consumers * signals, exporter.config.retry_on_failure,
                                    self._upstream_state(route), list(route[1]), exp_id, self.host)
            queue = self.stores.get(queue_config.storage).queues[f"{exp_id}/{signal.label}"]
            timeout = None if exp_id in self.config.connectors else getattr(exporter.config, "timeout", None)
            self.senders.append(Sender(exporter, queue, exporter.config.retry_on_failure, queue_config.num_consumers,
                                       settings, self.host, links[route], queue_config.drain_order == "newest_first",
                                       timeout))

    def _upstream_state(self, route: tuple[str, tuple[Address, ...]]) -> Callable[[bool], None]:
        """What one link reports: its exporter is online while every upstream it sends to is."""
        exp_id = route[0]
        states = self._link_states.setdefault(exp_id, {})

        def report(online: bool) -> None:
            states[route] = online
            self.host.upstream_state(exp_id, all(states.values()))
        return report

    def _feed(self, spec: Pipeline, running: RunningPipeline, limiters: list[Limiter]) -> None:
        """Connect the pipeline to the consumers of the receivers it lists (connectors feed it themselves)."""
        for rec_id in spec.receivers:
            if rec_id in self.config.connectors:
                continue
            if rec_id not in self.receivers:
                self.receivers[rec_id] = self._create("receivers", rec_id)
            key = (rec_id, spec.signal)
            if key not in self.consumers:
                self.consumers[key] = SignalConsumer(self.host, self.stopping, rec_id, spec.signal)
            self.consumers[key].add(running, limiters)
