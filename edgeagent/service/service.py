"""The running service: owns the graph and the order its parts start and stop in.

Start order: extensions, the metrics endpoints and periodic readers, queue stores (and their
compaction::on_start, which a stop gives up), the control socket, exporters, connectors, senders,
processors, receivers last; stop in reverse, so every stage drains into a live consumer. The
Service is the Host (edgeagent.service.host) every component receives.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

from edgeagent import __version__, lean
from edgeagent.component import Role
from edgeagent.config.loader import AgentConfig
from edgeagent.errors import ShutdownError
from edgeagent.extensions.metrics import Metrics
from edgeagent.receivers import codec
from edgeagent.runtime import supervise
from edgeagent.runtime.control import ControlServer, socket_path
from edgeagent.service import health
from edgeagent.service.consumers import ConsumerSlot
from edgeagent.service.graph import Graph
from edgeagent.service.health import Handler
from edgeagent.service.reload import (
    ReloadFailed,
    ReloadRefused,
    keeps_extension,
    keeps_receiver,
    storage_change,
    stranded,
    telemetry_change,
)
from edgeagent.service.storage import StoreEvents, Stores
from edgeagent.service.telemetry import Telemetry
from edgeagent.signals import Signal

log = logging.getLogger(__name__)


class Service:
    """One config, built and run. Implements the Host that components see."""

    def __init__(self, config: AgentConfig, state_dir: str, read_only: bool = False):
        self.config = config
        self.state_dir = state_dir
        self.telemetry = Telemetry()
        self.telemetry.describe(config.service.telemetry.resource_attributes())
        self.stopping = False
        self.started = False
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self.failures: dict[str, str] = {}
        count = self.telemetry.count
        def salvaged(directory: str, found: int, lost: int) -> None:
            count("edgeagent_queue_salvaged_records", found, directory)
            count("edgeagent_queue_lost_records", lost, directory)

        self.stores = Stores(config, state_dir, StoreEvents(
            corrupt_file=lambda directory: count("edgeagent_queue_corruptions", 1, directory),
            dropped=self.telemetry.drops.record,
            quarantined=lambda queue, records: count("edgeagent_corrupt_records", records, queue.name),
            salvaged=salvaged, damaged=self._storage_damaged), control_socket=socket_path(state_dir),
            read_only=read_only)
        self.graph = Graph(config, self, self.stores, lambda: self.stopping)
        self._slots: dict[tuple[str, Signal], ConsumerSlot] = {}
        self._control: ControlServer | None = None
        self._background: list[asyncio.Task[None]] = []
        # a report, no worker the agent needs: whatever ends it, it starts again
        self._drain_report = supervise.Kept(
            lambda: health.report_drain(self.status, health.REPORT_EVERY, self.telemetry), "drain-report", {},
            self.telemetry, health.REPORT_EVERY)
        self._started_stores: set[str] = set()
        self._reloading = asyncio.Lock()
        self._loading = asyncio.Lock()  # reloads load and apply one at a time: a config read later applies last
        self.reloader: Callable[[], AgentConfig] | None = None  # loads the config again (set by the CLI)
        self.fatal: str | None = None  # why the agent cannot go on (a worker stopped, a reload could not restore)
        self.on_fatal: Callable[[], None] | None = None  # the CLI stops the process then
        self.telemetry.metrics.counter("edgeagent_config_reloads", "Config reloads (SIGHUP or `edgeagent reload`) "
                                       "by result: applied, invalid or refused (the running config stays), failed (the "
                                       "new config did not start; the previous one runs again).",
                                       ("result",))

    def build(self) -> None:
        self.graph.build()
        self.stores.open_unnamed()
        self.telemetry.watch_stores(self.stores)
        self.telemetry.watch_exporters(lambda: self.graph.exporters)  # the graph a reload put in place
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

    def consumer(self, receiver_id: str, signal: Signal) -> ConsumerSlot | None:
        key = (receiver_id, signal)
        target = self.graph.consumers.get(key)
        if target is None:
            return None
        if key not in self._slots:
            self._slots[key] = ConsumerSlot(target)
        return self._slots[key]

    def counter_inc(self, name: str, amount: float, *labels: str) -> None:
        self.telemetry.counter_inc(name, amount, *labels)

    def count(self, name: str, amount: float, *labels: str) -> None:
        self.telemetry.count(name, amount, *labels)

    def upstream_state(self, exporter_id: str, online: bool) -> None:
        self.telemetry.upstream_state(exporter_id, online)

    def exporter_problem(self, exporter_id: str, problem: str | None) -> None:
        self.telemetry.exporter_problem(exporter_id, problem)

    def component_failed(self, path: str, message: str) -> None:
        self.failures[path] = message

    def component_stopped(self, path: str, message: str) -> None:
        self._stop_for(path, message, f"{path} stopped on an unexpected error ({message}); the agent stops")

    def _storage_damaged(self, directory: str, message: str) -> None:
        """A queue's data file is damaged (queue/damage.py): the agent stops, for its next start to salvage it."""
        self._stop_for(f"queue storage {directory}", message, message)

    def _stop_for(self, path: str, message: str, fatal: str) -> None:
        self.component_failed(path, message)
        if self.fatal is None:
            self.fatal = fatal
        if self.on_fatal is not None:
            self.on_fatal()

    def ready(self) -> bool:
        return self.started and not self.stopping and not self.failures

    def health(self) -> dict[str, Any]:
        return health.health(self, self.graph, self.telemetry)

    def status(self, running: bool = True) -> dict[str, Any]:
        return health.status(self.health(), self.telemetry, running)

    def control_handlers(self) -> dict[str, Handler]:
        """Looked up on every call, so the commands see the graph that runs now."""
        handlers = health.control_handlers(self.graph, self.status)
        handlers["reload"] = self._reload_command
        handlers["purge"] = self._purge_command
        return handlers

    async def _reload_command(self, params: dict[str, Any]) -> Any:
        return await self.reload_from_source()

    async def _purge_command(self, params: dict[str, Any]) -> Any:
        """Purge skips leased records, and a sender retrying a dead upstream holds its queue's first
        records for good: such a queue is purged with the graph's senders stopped (as a reload to the
        running config does, receivers kept), so a refused reload's advice to purge can be followed."""
        from edgeagent.queue import admin  # with the first purge (health.control_handlers)

        name = params.get("queue")
        purged: list[int] = []

        async def purge() -> None:
            purged.append(await admin.purge(self.stores.values(), name))
        async with self._reloading:
            if all(queue.available_entries == queue.entries for queue in self.graph.queues
                   if name in (None, queue.name)):
                await purge()
            else:
                running = self.config
                try:
                    await self._swap(await self._build(running), between=purge)
                except Exception as exc:
                    await self._restore(running, exc)
                    raise
        return {"purged_records": sum(purged)}

    # ---- reload ------------------------------------------------------------------------------

    async def reload_from_source(self) -> dict[str, Any]:
        """Load the config again as the CLI loaded it and apply it; keep the running one if it is invalid."""
        if self.reloader is None:
            return {"result": "refused", "errors": ["this agent was not started with a config it can load again"]}
        async with self._loading:
            return await self._load_and_apply(self.reloader)

    async def _load_and_apply(self, reloader: Callable[[], AgentConfig]) -> dict[str, Any]:
        from edgeagent.config.loader import ConfigError

        try:  # in a thread: an http(s) config source may take its time to answer, and the receivers go on
            config = await asyncio.to_thread(reloader)
        except ConfigError as error:
            if _out_of_resources(error.__cause__):  # a file not opened for want of a descriptor: no fault of its
                return self._not_loaded(error)
            for warning in error.warnings:  # first: an unset variable they name may be what the errors come from
                log.warning("config reload: %s", warning)
            for path, message in error.errors:
                log.error("config reload: %s", message, extra={"path": path})
            self.count("edgeagent_config_reloads", 1, "invalid")
            log.error("config reload refused: the new config is invalid; the running config stays",
                      extra={"errors": len(error.errors)})
            return {"result": "invalid", "errors": [f"{path}: {message}" if path else message
                                                    for path, message in error.errors]}
        except (RuntimeError, OSError, ImportError) as exc:  # no thread to load it on, no descriptor for an import
            return self._not_loaded(exc)
        for warning in config.warnings:  # as `run` logs them at start
            log.warning("config reload: %s", warning)
        try:
            await self.reload(config)
        except ReloadRefused as exc:
            self.count("edgeagent_config_reloads", 1, "refused")
            log.error("config reload refused: %s; the running config stays", exc)
            return {"result": "refused", "errors": [str(exc)]}
        except ReloadFailed as exc:
            self.count("edgeagent_config_reloads", 1, "failed")
            log.error("config reload failed: %s", exc)
            return {"result": "failed", "errors": [str(exc)]}
        return {"result": "applied", "pipelines": len(config.pipelines)}

    def _not_loaded(self, error: Exception) -> dict[str, Any]:
        """A reload whose config could not be loaded for want of a resource (a thread, a descriptor): nothing
        has changed, and the config is not known to be invalid."""
        self.count("edgeagent_config_reloads", 1, "failed")
        log.error("config reload failed: the config could not be loaded (%s); the running config stays", error)
        return {"result": "failed", "errors": [str(error)]}

    async def reload(self, config: AgentConfig) -> None:
        """Swap the graph for one built from `config`; queue stores stay open, unchanged receivers keep serving.

        A config that needs a restart or cannot be built is refused before anything stops, and so is
        any config once the agent is stopping (draining, or shutting down). One that
        does not start (a port taken) is stopped again and the running config started in its place
        (ReloadFailed); when that fails too nothing serves, so the service is marked fatal and the
        CLI exits, as otelcol's Run returns the reload error."""
        async with self._reloading:
            if self.stopping:  # a SIGTERM came first (a drain may still be sending): nothing starts again
                raise ReloadRefused("the agent is stopping")
            changed = storage_change(self.config, config)
            if changed is not None:
                raise ReloadRefused(f"{changed}: queue storage settings change only with a restart")
            telemetry = telemetry_change(self.config, config)
            if telemetry:
                raise ReloadRefused(f"{', '.join(telemetry)}: service::telemetry changes take effect only on restart")
            opened = set(self.stores.by_id)
            try:
                new = await self._build(config, guard=True)  # nothing has stopped yet: the running graph stays
            except ReloadRefused:
                raise
            except Exception as exc:
                raise ReloadRefused(f"the new config cannot be built: {exc}") from exc
            try:
                self._start_stores()  # a store this config opened first has no writer yet
            except Exception as exc:  # no thread for its writer (a pids limit): nothing has stopped yet
                self.stores.config = self.config
                await self._close_stores_since(opened)
                raise ReloadRefused(f"the new config's queue storage cannot start: {exc}") from exc
            running = self.config
            try:
                kept = await self._swap(new, guard=True)
            except Exception as exc:
                await self._restore(running, exc)
                await self._close_stores_since(opened, only_empty=True)  # the running config does not use them
                if isinstance(exc, ReloadRefused):
                    raise
                raise ReloadFailed(f"the new config did not start ({exc}); the previous config runs again") from exc
            self.failures.pop("service::reload", None)
            self.count("edgeagent_config_reloads", 1, "applied")
            lean.refreeze()
            log.info("config reloaded", extra={"pipelines": len(config.pipelines), "receivers_kept": sorted(kept)})

    async def _build(self, config: AgentConfig, guard: bool = False) -> Graph:
        """A graph of `config`, not started; a config that cannot be built (or, with `guard`, would strand
        queued data) leaves no store open."""
        opened = set(self.stores.by_id)
        self.stores.config = config
        graph = Graph(config, self, self.stores, lambda: self.stopping)
        try:
            graph.build()
            left = await stranded(self.graph, graph) if guard else []
            if left:
                raise ReloadRefused("; ".join(left))
            self.stores.open_unnamed()
        except Exception:
            self.stores.config = self.config
            await self._close_stores_since(opened)
            raise
        return graph

    async def _swap(self, new: Graph, guard: bool = False,
                    between: Callable[[], Awaitable[None]] | None = None) -> set[str]:
        """Stop the running graph and start `new` in its place; receivers and extensions whose settings
        both configs share keep running. With `guard`, data that reached a queue `new` does not read
        while the old graph stopped refuses the swap; `between` runs while no sender leases. Returns
        the receivers kept."""
        old, old_config, config = self.graph, self.config, new.config
        kept_receivers = {rid for rid in old.receivers if keeps_receiver(old_config, config, rid)}
        kept_extensions = {eid for eid in old.extensions if keeps_extension(old_config, config, eid)}
        new.receivers.update({rid: old.receivers[rid] for rid in kept_receivers})
        new.extensions.update({eid: old.extensions[eid] for eid in kept_extensions})
        await _stop(old, keep_receivers=kept_receivers, keep_extensions=kept_extensions)
        self.config, self.graph = config, new
        left = await stranded(old, new) if guard else []
        if left:
            raise ReloadRefused("; ".join(left))
        if between is not None:
            await between()
        await _start(new, skip_extensions=kept_extensions, skip_receivers=kept_receivers,
                     before_receivers=self._point_slots)
        return kept_receivers

    async def _restore(self, running: AgentConfig, error: Exception) -> None:
        """After a new graph failed to start: stop what of it started and start the running config again."""
        try:
            await self._swap(await self._build(running))
        except Exception as exc:
            self.fatal = (f"the new config did not start ({error}) and the agent could not start the previous "
                          f"config again ({exc}); the agent stops")
            self.component_failed("service::reload", self.fatal)
            if self.on_fatal is not None:
                self.on_fatal()
            raise ReloadFailed(self.fatal) from exc

    def _point_slots(self) -> None:
        for key, slot in self._slots.items():
            target = self.graph.consumers.get(key)
            if target is not None:
                slot.target = target

    # ---- lifecycle ---------------------------------------------------------------------------

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background task stopped unexpectedly", exc_info=task.exception(), extra={"task": task.get_name()}
            )
            self.component_stopped(task.get_name(), str(task.exception()))

    async def start(self) -> None:
        for extension in self.graph.extensions.values():
            await extension.start()
        await self.telemetry.serve(self.config.service.telemetry.metrics)
        self._start_stores()
        for store in self.stores.values():  # compaction::on_start, before the queues are read or written
            await store.compacted()
        if self.stopping:  # a stop came meanwhile (the compaction gave up): nothing more starts
            return
        self._drain_report.start()
        self._control = ControlServer(socket_path(self.state_dir), _Handlers(self))
        await self._control.start()
        await _start(self.graph, skip_extensions=set(self.graph.extensions))
        self.started = True
        backlog = {q.name: q.items for q in self.graph.queues if q.items}
        log.info("edgeagent is ready", extra={"version": __version__, "backlog_items": sum(backlog.values()),
                                              "queues": backlog})
        # the first request's modules, loaded before the loop serves anything else (codec.load_ahead):
        # on a thread, a flood of connections right after the start could take every descriptor first
        asyncio.get_running_loop().call_soon(codec.load_ahead)
        for name, queue in self.health()["unowned_queues"].items():
            log.warning("a queue holds data that no exporter of the config sends", extra={"queue": name, **queue})

    def _start_stores(self) -> None:
        """Start the writer (and the rebound compaction) of every store not started yet: at start, and
        after a reload whose config opened a store of its own."""
        for key, store in self.stores.by_id.items():
            if key in self._started_stores:
                continue
            store.start()
            self._started_stores.add(key)
            rebound = self.stores.rebound.get(key)
            if rebound is not None:
                task = asyncio.create_task(store.compact_on_rebound(rebound.needed_mib, rebound.trigger_mib,
                                                                    rebound.interval, self), name=f"rebound:{key}")
                task.add_done_callback(self._background_done)
                self._background.append(task)

    async def _close_stores_since(self, opened: set[str], only_empty: bool = False) -> None:
        """Close the stores a refused or failed config opened, so the next config opens its own. With
        `only_empty`, one whose queues took data meanwhile stays open: `status` shows them unowned."""
        for key in set(self.stores.by_id) - opened:
            store = self.stores.by_id[key]
            if only_empty and any(queue.entries for queue in store.queues.values()):
                continue
            self.stores.rebound.pop(key, None)
            self._started_stores.discard(key)
            for task in self._background:
                if task.get_name() == f"rebound:{key}":
                    task.cancel()
            del self.stores.by_id[key]
            await _quietly(store.close(), "queue store")

    def interrupt(self) -> None:
        """A stop is coming (SIGTERM): a compaction under way gives up, and a start under way starts
        nothing more, so the stop need not wait for them."""
        self.stopping = True
        for store in self.stores.values():
            store.stop_compaction()

    async def drain(self, timeout: float) -> None:
        """Before a stop: refuse new data, then keep sending until the queues are empty or `timeout` passes.

        For hubs scaled down for good, whose queue would otherwise wait on a volume nobody mounts.
        The traces a tail_sampling stage holds are waited for too: it decides each once its
        decision_wait is over, and the kept ones join the queues. What is still queued (or held)
        at the deadline stays on disk for the next start."""
        self.stopping = True
        await _stop_receivers(list(self.graph.receivers.values()))
        for sender in self.graph.senders:  # nothing more arrives: batches waiting to fill go out now
            sender.flush()
        deadline = time.monotonic() + timeout
        queued, held = self._undrained()
        if queued or held:
            log.info("draining the queues before stopping", extra={"items": queued, "held_traces": held,
                                                                    "timeout_seconds": timeout})
        while (queued or held) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # acks commit in batches; a short poll is cheaper than per-ack events
            queued, held = self._undrained()
        if queued or held:
            log.warning("stopping with data still queued; it is sent after the next start",
                        extra={"items": queued, "held_traces": held})

    def _undrained(self) -> tuple[int, int]:
        """Items in the queues, and traces the tail_sampling stages hold (pending, or decided and not yet queued)."""
        return (sum(queue.items for queue in self.graph.queues),
                sum(stage.pending_traces() for stage in self.graph.stages.values()))

    async def shutdown(self) -> None:
        """Stop receivers, finish pending commits, return leases, close storage. Idempotent."""
        self.stopping = True
        for store in self.stores.values():  # clients waiting for room or a delivery are answered now
            store.end_waits(ShutdownError("the agent is shutting down; the data stays queued", retry_after=5.0))
        async with self._reloading:
            await _stop(self.graph, keep_extensions=set(self.graph.extensions))
            if self._control is not None:
                await _quietly(self._control.shutdown(), "control socket")
            for task in self._background:
                task.cancel()
            tasks = [*self._background, self._drain_report.stop()]
            await asyncio.gather(*(task for task in tasks if task is not None), return_exceptions=True)
            for store in self.stores.values():
                await _quietly(store.close(), "queue store")
            await _quietly(self.telemetry.stop_serving(), "metrics server")
            for extension in self.graph.extensions.values():
                await _quietly(extension.shutdown(), "extension")


class _Handlers(Mapping[str, Handler]):
    """The control socket's commands, looked up when called, so they act on the graph that runs now."""

    def __init__(self, service: Service):
        self.service = service

    def __getitem__(self, name: str) -> Handler:
        return self.service.control_handlers()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.service.control_handlers())

    def __len__(self) -> int:
        return len(self.service.control_handlers())


async def _start(graph: Graph, skip_extensions: set[str], skip_receivers: frozenset[str] | set[str] = frozenset(),
                 before_receivers: Callable[[], None] | None = None) -> None:
    """Start a graph's components, receivers last; the skipped ones already run."""
    for ext_id, extension in graph.extensions.items():
        if ext_id not in skip_extensions:
            await extension.start()
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
    if before_receivers is not None:
        before_receivers()
    for rec_id, receiver in graph.receivers.items():
        if rec_id not in skip_receivers:
            await receiver.start()


async def _stop(
    graph: Graph, keep_extensions: set[str], keep_receivers: frozenset[str] | set[str] = frozenset()
) -> None:
    """Stop a graph's components in reverse order; queue stores and kept components stay."""
    await _stop_receivers([receiver for rec_id, receiver in graph.receivers.items() if rec_id not in keep_receivers])
    for processor in graph.processors.values():
        await _quietly(processor.shutdown(), "processor")
    # at once: each gives its deliveries under way a grace period, which one after the other added up
    # past a service manager's stop timeout
    await asyncio.gather(*(_quietly(sender.shutdown(), "sender") for sender in graph.senders))
    for connector in graph.connectors.values():
        await _quietly(connector.shutdown(), "connector")
    for exporter in graph.exporters.values():
        await _quietly(exporter.shutdown(), "exporter")
    for ext_id, extension in graph.extensions.items():
        if ext_id not in keep_extensions:
            await _quietly(extension.shutdown(), "extension")


class _Receiver(Protocol):
    async def shutdown(self) -> None: ...


async def _stop_receivers(receivers: list[_Receiver]) -> None:
    """At once, and all stopped before anything after them: each gives its requests in progress a
    grace period, which one after the other added up past a service manager's stop timeout."""
    await asyncio.gather(*(_quietly(receiver.shutdown(), "receiver") for receiver in receivers))


async def _quietly(awaitable: Awaitable[Any], what: str) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout=5.0)
    except Exception as exc:
        log.error("%s did not stop cleanly", what, exc_info=exc)


def _out_of_resources(error: BaseException | None) -> bool:
    """Whether `error` is the process's want of a descriptor (or of memory), not the fault of what it opened."""
    return isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM)

