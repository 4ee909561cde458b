"""The running service: owns the graph and the order its parts start and stop in.

Start order: extensions, the metrics endpoint, queue stores, the control socket, exporters,
connectors, senders, processors, receivers last; stop in reverse, so every stage drains into a
live consumer. The Service is the Host (edgeagent.service.host) every component receives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any

from edgeagent import __version__
from edgeagent.component import Role
from edgeagent.config.loader import AgentConfig
from edgeagent.extensions.metrics import Metrics
from edgeagent.runtime.control import ControlServer, socket_path
from edgeagent.service import health
from edgeagent.service.consumers import SignalConsumer
from edgeagent.service.graph import Graph
from edgeagent.service.storage import StoreEvents, Stores
from edgeagent.service.telemetry import Telemetry
from edgeagent.signals import Signal

log = logging.getLogger(__name__)


class Service:
    """One config, built and run. Implements the Host that components see."""

    def __init__(self, config: AgentConfig, state_dir: str):
        self.config = config
        self.state_dir = state_dir
        self.telemetry = Telemetry()
        self.stopping = False
        self.started = False
        self.started_at = time.time()
        self.failures: dict[str, str] = {}
        count = self.telemetry.count
        self.stores = Stores(config, state_dir, StoreEvents(
            corrupt_file=lambda directory: count("edgeagent_queue_corruptions", 1, directory),
            dropped=self.telemetry.drops.record,
            quarantined=lambda queue, records: count("edgeagent_corrupt_records", records, queue.name)))
        self.graph = Graph(config, self, self.stores, lambda: self.stopping)
        self._control: ControlServer | None = None
        self._background: list[asyncio.Task[None]] = []

    def build(self) -> None:
        self.graph.build()
        self.telemetry.watch_stores(self.stores)
        graph = self.graph
        self.telemetry.gauge(
            "edgeagent_upstream_configured", "1 when the exporter has an upstream endpoint, 0 when it only buffers.",
            ("exporter",), lambda: [((e,), 1.0 if x.configured else 0.0) for e, x in graph.exporters.items()])
        self.telemetry.gauge(
            "edgeagent_failover_active_level", "Priority level a failover connector sends to (0 = the first).",
            ("connector",), lambda: [((cid,), float(c.active_level))
                                     for cid, c in graph.of_type("connectors", "failover").items()])
        self.telemetry.gauge(
            "edgeagent_memory_limiter_refusing", "1 while the memory limiter refuses new data.", ("processor",),
            lambda: [((pid,), 1.0 if p.refusing else 0.0) for pid, p in graph.of_role(Role.ADMISSION).items()])

    # ---- the Host ------------------------------------------------------------------------------

    @property
    def metrics(self) -> Metrics:
        return self.telemetry.metrics

    @property
    def extensions(self) -> Mapping[str, Any]:
        return self.graph.extensions

    def consumer(self, receiver_id: str, signal: Signal) -> SignalConsumer | None:
        return self.graph.consumers.get((receiver_id, signal))

    def counter_inc(self, name: str, amount: float, *labels: str) -> None:
        self.telemetry.counter_inc(name, amount, *labels)

    def count(self, name: str, amount: float, *labels: str) -> None:
        self.telemetry.count(name, amount, *labels)

    def upstream_state(self, exporter_id: str, online: bool) -> None:
        self.telemetry.upstream_state(exporter_id, online)

    def component_failed(self, path: str, message: str) -> None:
        self.failures[path] = message

    def ready(self) -> bool:
        return self.started and not self.stopping and not self.failures

    def health(self) -> dict[str, Any]:
        return health.health(self, self.graph, self.telemetry)

    def status(self) -> dict[str, Any]:
        return health.status(self.health(), self.telemetry)

    def control_handlers(self) -> dict[str, health.Handler]:
        return health.control_handlers(self.graph, self.status)

    # ---- lifecycle ---------------------------------------------------------------------------

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task stopped unexpectedly", exc_info=task.exception(), extra={"task": task.get_name()})
            self.component_failed(task.get_name(), str(task.exception()))

    async def start(self) -> None:
        graph = self.graph
        for extension in graph.extensions.values():
            await extension.start()
        await self.telemetry.serve(self.config.service.telemetry.metrics)
        for key, store in self.stores.by_id.items():
            store.start()
            rebound = self.stores.rebound.get(key)
            if rebound is not None:
                task = asyncio.create_task(store.compact_on_rebound(rebound.needed_mib, rebound.trigger_mib,
                                                                    rebound.interval), name=f"rebound:{key}")
                task.add_done_callback(self._background_done)
                self._background.append(task)
        self._control = ControlServer(socket_path(self.state_dir), self.control_handlers())
        await self._control.start()
        for exporter in graph.exporters.values():
            await exporter.start()
        for connector in graph.connectors.values():
            await connector.start()
        for sender in graph.senders:
            if sender.exporter.configured:
                await sender.start()
        for exp_id, exporter in graph.exporters.items():
            if not exporter.configured:
                log.warning("no upstream is configured: data is buffered durably and will be sent once an "
                            "upstream is set (--upstream URL or EDGEAGENT_UPSTREAM)", extra={"exporter": exp_id})
        for processor in graph.processors.values():
            await processor.start()
        for receiver in graph.receivers.values():
            await receiver.start()
        self.started = True
        backlog = {q.name: q.items for q in self.stores.queues() if q.items}
        log.info("edgeagent is ready", extra={"version": __version__, "backlog_items": backlog})

    async def shutdown(self) -> None:
        """Stop receivers, finish pending commits, return leases, close storage. Idempotent."""
        self.stopping = True
        graph = self.graph
        for receiver in graph.receivers.values():
            await _quietly(receiver.shutdown(), "receiver")
        for processor in graph.processors.values():
            await _quietly(processor.shutdown(), "processor")
        if self._control is not None:
            await _quietly(self._control.shutdown(), "control socket")
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for sender in graph.senders:
            await _quietly(sender.shutdown(), "sender")
        for connector in graph.connectors.values():
            await _quietly(connector.shutdown(), "connector")
        for exporter in graph.exporters.values():
            await _quietly(exporter.shutdown(), "exporter")
        for store in self.stores.values():
            await _quietly(store.close(), "queue store")
        await _quietly(self.telemetry.stop_serving(), "metrics server")
        for extension in graph.extensions.values():
            await _quietly(extension.shutdown(), "extension")


async def _quietly(awaitable: Awaitable[Any], what: str) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout=5.0)
    except Exception as exc:
        log.error("%s did not stop cleanly", what, exc_info=exc)
