"""What the service says about itself: `/health` (health_check), `edgeagent status`, the control socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from edgeagent import __version__
from edgeagent.component import Role
from edgeagent.queue import admin
from edgeagent.service.graph import Graph
from edgeagent.service.telemetry import Telemetry

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class State(Protocol):
    """The service's lifecycle as health reports it."""

    started: bool
    stopping: bool
    started_at: float
    failures: dict[str, str]


def health(state: State, graph: Graph, telemetry: Telemetry) -> dict[str, Any]:
    now_ms = time.time() * 1000
    queues = {queue.name: {"entries": queue.entries, "items": queue.items, "bytes": queue.bytes,
                           "oldest_age_seconds": round((now_ms - queue.oldest_ms) / 1000, 3)
                           if queue.oldest_ms else 0.0}
              for queue in graph.stores.queues()}
    exporters = {}
    for exp_id, exporter in graph.exporters.items():
        online = telemetry.upstream_online.get(exp_id)
        exporters[exp_id] = {
            "endpoint": exporter.describe() if exporter.configured else None,
            "upstream": ("not configured" if not exporter.configured else
                         "unknown" if online is None else "online" if online else "offline"),
        }
    return {
        "healthy": state.started and not state.failures,
        "ready": state.started and not state.stopping and not state.failures,
        "version": __version__,
        "upSince": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.started_at)),
        "uptime": f"{time.time() - state.started_at:.1f}s",
        "exporters": exporters,
        "connectors": {cid: c.health() for cid, c in graph.connectors.items()},
        "queues": queues,
        "dead_letters": sum(store.deadletter_entries for store in graph.stores.values()),
        "memory_limiter": {pid: p.health() for pid, p in graph.of_role(Role.ADMISSION).items()},
        "tail_sampling": {pid: p.health() for pid, p in graph.of_role(Role.STAGE).items()},
        "failures": state.failures,
    }


def status(details: dict[str, Any], telemetry: Telemetry) -> dict[str, Any]:
    """What `edgeagent status` prints: health details plus drain rate and time to empty."""
    backlog = sum(queue["items"] for queue in details["queues"].values())
    rate = telemetry.drain.rate()
    details["backlog_items"] = backlog
    details["drain_items_per_second"] = round(rate, 1)
    details["eta_seconds"] = round(backlog / rate, 1) if rate > 0 else (0.0 if not backlog else None)
    return details


def control_handlers(graph: Graph, status_of: Callable[[], dict[str, Any]]) -> dict[str, Handler]:
    """The commands the control socket serves (the CLI's `status`, `queue ...`, `dead-letter ...`)."""
    stores = graph.stores.values()

    async def status_command(params: dict[str, Any]) -> Any:
        return status_of()

    async def stats(params: dict[str, Any]) -> Any:
        return admin.stats(stores)

    async def peek(params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(admin.peek, stores, int(params.get("n", 10)))

    async def export(params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(lambda: b"".join(admin.export(stores, params.get("format", "otlp-json"))))

    async def purge(params: dict[str, Any]) -> Any:
        return {"purged_records": await admin.purge(stores, params.get("queue"))}

    async def compact(params: dict[str, Any]) -> Any:
        return await admin.compact(stores)

    async def dead_letter_list(params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(admin.dead_letters, stores, int(params.get("n", 0)))

    async def dead_letter_export(params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(lambda: b"".join(admin.dead_letter_bodies(stores)))

    async def dead_letter_replay(params: dict[str, Any]) -> Any:
        return {"replayed": await admin.replay(stores, params.get("seqs"))}

    async def dead_letter_purge(params: dict[str, Any]) -> Any:
        return {"purged": await admin.purge_dead_letters(stores, params.get("seqs"))}

    return {"status": status_command, "stats": stats, "peek": peek, "export": export, "purge": purge,
            "compact": compact, "dead-letter-list": dead_letter_list, "dead-letter-export": dead_letter_export,
            "dead-letter-replay": dead_letter_replay, "dead-letter-purge": dead_letter_purge}
