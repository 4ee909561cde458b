"""Queue operations for the command line: stats, peek, export, purge, compact, dead letters.

The same functions serve `edgeagent queue ...` whether the agent runs or not: with the agent
running, the CLI asks it over its control socket (control.py) and the agent runs them on its
live stores, so its counters stay right; otherwise the CLI opens the stores itself.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import zstandard

from edgeagent.queue import maintenance, record
from edgeagent.queue.ops import KEY
from edgeagent.queue.store import QueueStore, Table
from edgeagent.receivers.codec import to_otlp_json
from edgeagent.signals import count_items


def stats(stores: list[QueueStore]) -> dict[str, Any]:
    now_ms = time.time() * 1000
    out: dict[str, Any] = {"stores": []}
    for store in stores:
        queues = {}
        for queue in store.queues.values():
            queues[queue.name] = {
                "entries": queue.entries, "items": queue.items, "bytes": queue.bytes,
                "oldest_age_seconds": round((now_ms - queue.oldest_ms) / 1000, 3) if queue.oldest_ms else 0.0,
                "capacity": {"size": queue.capacity.size, "sizer": queue.capacity.sizer,
                             "used": queue.capacity_used()},
            }
        out["stores"].append({
            "directory": store.directory, "file_bytes": store.file_size(), "pages_in_use_bytes": store.pages_in_use,
            "max_size_bytes": store.limits.max_size, "full_policy": store.limits.full_policy,
            "dead_letters": store.deadletter_entries, "queues": queues,
        })
    return out


def queue_names(store: QueueStore) -> list[str]:
    """Every queue on disk (its `q:<name>` sub-database), named in the config or not."""
    if store.env is None:  # read-only, and no data file yet
        return []
    with store.reading(None) as txn:
        keys = [bytes(key) for key in txn.cursor().iternext(values=False)]
    return [key[2:].decode("utf-8", "replace") for key in keys if key.startswith(b"q:")]


def table_records(store: QueueStore, table: Table) -> int:
    """Records in a stage's sub-database (tail sampling's buffer)."""
    with store.reading(table) as txn:
        return int(txn.stat(table.db)["entries"])  # the handle read inside the gate: reading's own


def records(store: QueueStore, queue_name: str, limit: int = 0) -> Iterator[tuple[int, record.RecordHeader, bytes]]:
    """(seq, header, serialized request) of a queue's records in order, read in one snapshot."""
    queue = store.queues[queue_name]
    if queue.db is None:
        return
    decompressor = zstandard.ZstdDecompressor()
    with store.reading(queue) as txn:
        for count, (key, value) in enumerate(txn.cursor(), start=1):
            header = record.decode_header(value)
            yield KEY.unpack(key)[0], header, record.decode_body(value, header, decompressor)
            if limit and count >= limit:
                return


def peek(stores: list[QueueStore], limit: int) -> list[dict[str, Any]]:
    now_ms = time.time() * 1000
    out = []
    for store in stores:
        for name in store.queues:
            for seq, header, body in records(store, name, limit):
                request = header.signal.request_class.FromString(body)
                out.append({"queue": name, "seq": seq, "signal": header.signal.label, "items": header.items,
                            "bytes": len(body), "attempts": header.attempts,
                            "age_seconds": round((now_ms - header.enqueued_ms) / 1000, 3),
                            "batch_key": header.batch_key.decode("utf-8", "replace"),
                            "checked_items": count_items(header.signal, request)})
    return out


def export(stores: list[QueueStore], fmt: str) -> Iterator[bytes]:
    """Every queued request: OTLP/JSON lines, or protobuf messages each after a 4-byte big-endian length."""
    for store in stores:
        for name in store.queues:
            for _, header, body in records(store, name):
                if fmt == "otlp-json":
                    message = header.signal.request_class.FromString(body)
                    yield json.dumps({"queue": name, "signal": header.signal.label, **to_otlp_json(message)},
                                     separators=(",", ":")).encode() + b"\n"
                else:
                    yield struct.pack(">I", len(body)) + body


def dead_letters(stores: list[QueueStore], limit: int = 0) -> list[dict[str, Any]]:
    out = []
    for store in stores:
        for letter in maintenance.dead_letters(store, limit):
            header = letter.header
            out.append({"directory": store.directory, "seq": letter.seq, "signal": header.signal.label,
                        "items": header.items, **letter.description})
    return out


def dead_letter_bodies(stores: list[QueueStore]) -> Iterator[bytes]:
    for store in stores:
        for letter in maintenance.dead_letters(store):
            message = letter.header.signal.request_class.FromString(letter.body())
            yield json.dumps({"seq": letter.seq, "description": letter.description, **to_otlp_json(message)},
                             separators=(",", ":")).encode() + b"\n"


async def purge(stores: list[QueueStore], queue_name: str | None) -> int:
    """Purge every queue, or the one named; a name no store holds is an error (a typo purges nothing)."""
    names = sorted(name for store in stores for name in store.queues)
    if queue_name is not None and queue_name not in names:
        raise KeyError(f"no queue named {queue_name!r}; the queues are: {', '.join(names) or 'none'}")
    total = 0
    for store in stores:
        for name, queue in store.queues.items():
            if queue_name in (None, name):
                total += await maintenance.purge(store, queue)
    return total


async def compact(stores: list[QueueStore]) -> list[dict[str, Any]]:
    out = []
    for store in stores:
        before, after = await store.compact_now()
        out.append({"directory": store.directory, "bytes_before": before, "bytes_after": after})
    return out


async def replay(stores: list[QueueStore], seqs: list[int] | None) -> int:
    return sum([await maintenance.replay_dead_letters(store, seqs) for store in stores])


async def purge_dead_letters(stores: list[QueueStore], seqs: list[int] | None) -> int:
    return sum([await maintenance.purge_dead_letters(store, seqs) for store in stores])


