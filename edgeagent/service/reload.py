"""Config reload (SIGHUP, `edgeagent reload`): which running parts a new config keeps.

A reload never loses or repeats acknowledged data: everything acknowledged is in a queue store,
and stores stay open across a reload. A receiver or extension whose settings (and, for a
receiver, the signals it feeds) did not change keeps running, with its port and connections;
every other component is stopped and built again from the new config. Changes to the queue
storage itself (file_storage settings, the agent's own store) and to service::telemetry (the
metrics endpoint and logging are set up once, at start) need a restart.

A reload never strands data either: a config whose graph no longer reads a queue the running one
sends from (an exporter removed, renamed, moved to another storage or without sending_queue), or
a tail_sampling buffer, is refused while that queue or buffer holds records.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edgeagent.config.loader import AgentConfig
from edgeagent.service.graph import Graph
from edgeagent.signals import Signal


class ReloadRefused(ValueError):
    """The new config is valid but cannot be applied: it needs a restart, or its graph cannot be built."""


class ReloadFailed(RuntimeError):
    """The new config did not start: the previous one runs again, or (Service.fatal) nothing does."""


def storage_change(old: AgentConfig, new: AgentConfig) -> str | None:
    """What storage a reload would change, or None."""
    old_storages = {ext_id: old.extensions[ext_id].config for ext_id in old.extensions
                    if old.extensions[ext_id].id.type == "file_storage"}
    for ext_id, component in new.extensions.items():
        if component.id.type == "file_storage" and ext_id in old_storages and old_storages[ext_id] != component.config:
            return f"extensions::{ext_id}"
    return None


def telemetry_change(old: AgentConfig, new: AgentConfig) -> list[str]:
    """The service::telemetry keys a reload would change (they take effect only on restart)."""
    return _changed("service::telemetry", old.service.telemetry.model_dump(), new.service.telemetry.model_dump())


def _changed(path: str, old: Any, new: Any) -> list[str]:
    if old == new:
        return []
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [path]
    return [changed for key in sorted(set(old) | set(new), key=str)
            for changed in _changed(f"{path}::{key}", old.get(key), new.get(key))]


async def stranded(old: Graph, new: Graph) -> list[str]:
    """What queued data a swap from `old` to `new` would leave where nothing reads it, each with its fix."""
    from edgeagent.queue import admin  # with the first reload: a start needs none of admin's verbs

    left = [f"queue {queue.name} holds {queue.items} items ({queue.entries} requests) that the new config no "
            f"longer sends: let it drain first, or run `edgeagent queue purge --queue {queue.name} --yes`"
            for queue in sorted(old.queues - new.queues, key=lambda queue: queue.name) if queue.entries]
    read = {stage.table for stage in new.stages.values()}
    for stage_id, stage in sorted(old.stages.items()):
        records = 0 if stage.table in read else await asyncio.to_thread(admin.table_records, stage.store, stage.table)
        if records:
            left.append(f"processors::{stage_id} buffers {records} records of traces not decided yet that the new "
                        f"config no longer reads: keep it until they are decided (decision_wait)")
    return left


def receiver_signals(config: AgentConfig, receiver_id: str) -> set[Signal]:
    return {spec.signal for spec in config.pipelines if receiver_id in spec.receivers}


def keeps_receiver(old: AgentConfig, new: AgentConfig, receiver_id: str) -> bool:
    return (receiver_id in old.receivers and receiver_id in new.receivers
            and old.receivers[receiver_id].config == new.receivers[receiver_id].config
            and receiver_signals(old, receiver_id) == receiver_signals(new, receiver_id))


def keeps_extension(old: AgentConfig, new: AgentConfig, extension_id: str) -> bool:
    return (extension_id in old.extensions and extension_id in new.extensions
            and old.extensions[extension_id].config == new.extensions[extension_id].config)
