"""What the service says about itself: `/health` (health_check), `edgeagent status`, the control socket."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from edgeagent import __version__
from edgeagent.component import Role
from edgeagent.queue import record
from edgeagent.runtime import control, supervise
from edgeagent.service.graph import Graph
from edgeagent.service.telemetry import Telemetry

log = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class State(Protocol):
    """The service's lifecycle as health reports it."""

    started: bool
    stopping: bool
    started_at: float  # the wall clock at start (upSince)
    started_monotonic: float  # time.monotonic() then: uptime, which a step of the wall clock leaves alone
    failures: dict[str, str]


def health(state: State, graph: Graph, telemetry: Telemetry) -> dict[str, Any]:
    now_ms = time.time() * 1000
    queues = {queue.name: {"entries": queue.entries, "items": queue.items, "bytes": queue.bytes,
                           "oldest_age_seconds": record.age_seconds(queue.oldest_ms, now_ms)}
              for queue in sorted(graph.queues, key=lambda queue: queue.name)}
    exporters = {}
    for exp_id, exporter in graph.exporters.items():
        exporters[exp_id] = {"endpoint": exporter.describe() if exporter.configured else None,
                             "upstream": _upstream(exp_id, exporter, telemetry)}
        if exp_id in telemetry.problems:
            exporters[exp_id]["problem"] = telemetry.problems[exp_id]
    return {
        # as otelcol's health check: not available until started, and again from the start of a stop
        "healthy": state.started and not state.stopping and not state.failures,
        "ready": state.started and not state.stopping and not state.failures,
        "version": __version__,
        "upSince": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.started_at)),
        "uptime": f"{time.monotonic() - state.started_monotonic:.1f}s",  # as Go's time.Since
        "exporters": exporters,
        "connectors": {
            cid: {**c.health(), "upstream": _upstream(cid, c, telemetry),
                  **({"problem": telemetry.problems[cid]} if cid in telemetry.problems else {})}
            for cid, c in graph.connectors.items()
        },
        "queues": queues,
        "storage": {store.directory: store.storage_state() for store in graph.stores.values()},
        "dead_letters": sum(store.deadletter_entries for store in graph.stores.values()),
        "memory_limiter": {pid: p.health() for pid, p in graph.of_role(Role.ADMISSION).items()},
        "tail_sampling": {pid: p.health() for pid, p in graph.of_role(Role.STAGE).items()},
        "failures": state.failures,
        "unowned_queues": unowned_queues(graph),
    }


def unowned_queues(graph: Graph) -> dict[str, dict[str, Any]]:
    """Queues holding data that no exporter of the config sends (removed or renamed): they never drain."""
    return {queue.name: {"directory": store.directory, "items": queue.items, "entries": queue.entries,
                         "fix": f"edgeagent queue purge --queue {queue.name} --yes, or name its exporter again"}
            for store in graph.stores.values() for queue in store.queues.values()
            if queue.entries and queue not in graph.queues}


def _upstream(component_id: str, component: Any, telemetry: Telemetry) -> str:
    """An exporter's (or a connector's, over all its levels) upstream state, as its sender's link found it."""
    online = telemetry.upstream_online.get(component_id)
    if not component.configured:
        return "not configured"
    return "unknown" if online is None else "online" if online else "offline"


def status(details: dict[str, Any], telemetry: Telemetry, running: bool = True) -> dict[str, Any]:
    """What `edgeagent status` prints: health details plus backlog, drain rate and time to empty.

    `drain` says why there is no time to empty: "waiting for upstream" while an upstream is
    offline (a rate measured before the outage would promise a stale ETA), "retrying" while one
    with data queued reaches its upstream and fails (a 503: the same stale rate), "no upstream"
    when data is only buffered, "not running" beside a stopped agent. A stopped agent's upstreams are
    "unknown": the config read beside it may lack the environment its service had."""
    if not running:
        for component in (*details["exporters"].values(), *details["connectors"].values()):
            component["upstream"] = "unknown"
    queues = details["queues"].values()
    backlog = sum(queue["items"] for queue in queues)
    upstreams = [exporter["upstream"] for exporter in details["exporters"].values()]
    rate = telemetry.drain.rate()
    if not backlog:
        drain, eta = "empty", 0.0
    elif not running:
        drain, eta = "not running", None
    elif "offline" in upstreams:
        drain, eta = "waiting for upstream", None
    elif _failing_with_backlog(details):
        drain, eta = "retrying", None
    elif upstreams and all(state == "not configured" for state in upstreams):
        drain, eta = "no upstream", None
    elif rate > 0:
        drain, eta = "draining", round(backlog / rate, 1)
    else:
        drain, eta = "starting", None
    details["backlog_items"] = backlog
    details["oldest_age_seconds"] = max((queue["oldest_age_seconds"] for queue in queues), default=0.0)
    details["drain"] = drain
    # a tenth of an item a second, and three digits below one: a slow link's 0.03 items/s is not 0.0
    details["drain_items_per_second"] = round(rate, 1) if rate >= 1 else float(f"{rate:.3g}")
    details["eta_seconds"] = eta
    return details


def _failing_with_backlog(details: dict[str, Any]) -> bool:
    """Whether an exporter or connector whose last send failed has data queued (its queues are
    named `<id>/<signal>`)."""
    waiting = {name.rpartition("/")[0] for name, queue in details["queues"].items() if queue["items"]}
    components = {**details["exporters"], **details["connectors"]}
    return any("problem" in components.get(name, {}) for name in waiting)


BACKLOG_AGE = 5.0  # seconds queued data has waited when it is a backlog, not data in flight
REPORT_EVERY = 5.0  # seconds between two looks at the backlog


async def report_drain(status_of: Callable[[], dict[str, Any]], interval: float = REPORT_EVERY,
                       counting: supervise.Counting | None = None) -> None:
    """Run until cancelled: while a backlog drains, log items left, rate and time to empty every `interval`.

    A backlog is data that has waited longer than BACKLOG_AGE: a healthy agent always holds some
    data for a moment (batched, in flight), which is not reported. Once a backlog was reported
    (draining, or waiting for its upstream), "backlog drained" says when there is none any more.
    A look that fails is counted and logged as any supervised job's step (runtime/supervise.py):
    a report never stops the agent."""
    reported, was = False, "empty"

    def look() -> None:
        nonlocal reported, was
        details = status_of()
        drain = details["drain"]
        if drain == "waiting for upstream":
            if was != drain:
                log.warning("backlog waiting for upstream",
                            extra={"items_left": details["backlog_items"],
                                   "oldest_age_seconds": details["oldest_age_seconds"]})
            reported = True
        elif drain == "draining" and details["oldest_age_seconds"] > BACKLOG_AGE:
            log.info("draining the backlog", extra={"items_left": details["backlog_items"],
                                                    "items_per_second": details["drain_items_per_second"],
                                                    "eta_seconds": details["eta_seconds"],
                                                    "oldest_age_seconds": details["oldest_age_seconds"]})
            reported = True
        elif reported and details["oldest_age_seconds"] <= BACKLOG_AGE:
            log.info("backlog drained", extra={"items_left": details["backlog_items"]})
            reported = False
        was = drain

    await supervise.every(interval, look, "drain-report", {}, counting)


def control_handlers(graph: Graph, status_of: Callable[[], dict[str, Any]]) -> dict[str, Handler]:
    """The commands the control socket serves (the CLI's `status`, `queue ...`, `dead-letter ...`)."""
    from edgeagent.queue import admin  # with the first command: a start serves none (and it took 1 ms)

    stores = graph.stores.values()

    async def status_command(params: dict[str, Any]) -> Any:
        return status_of()

    async def stats(params: dict[str, Any]) -> Any:
        return admin.stats(stores)

    async def peek(params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(admin.peek, stores, int(params.get("n", 10)))

    async def export(params: dict[str, Any]) -> Any:  # streamed: the whole export is never held
        fmt = params.get("format", "otlp-json")
        return control.from_thread(lambda: admin.export(list(stores), fmt))

    async def purge(params: dict[str, Any]) -> Any:
        return {"purged_records": await admin.purge(stores, params.get("queue"))}

    async def compact(params: dict[str, Any]) -> Any:
        return await admin.compact(stores)

    async def dead_letter_list(params: dict[str, Any]) -> Any:  # streamed, as an export: JSON lines
        return control.from_thread(lambda: admin.dead_letters(list(stores)))

    async def dead_letter_export(params: dict[str, Any]) -> Any:
        return control.from_thread(lambda: admin.dead_letter_bodies(list(stores)))

    async def dead_letter_replay(params: dict[str, Any]) -> Any:
        return await admin.replay(stores, params.get("seqs"))

    async def dead_letter_purge(params: dict[str, Any]) -> Any:
        return {"purged": await admin.purge_dead_letters(stores, params.get("seqs"))}

    return {"status": status_command, "stats": stats, "peek": peek, "export": export, "purge": purge,
            "compact": compact, "dead-letter-list": dead_letter_list, "dead-letter-export": dead_letter_export,
            "dead-letter-replay": dead_letter_replay, "dead-letter-purge": dead_letter_purge}
