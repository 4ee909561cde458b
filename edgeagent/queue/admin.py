"""Queue operations for the command line: stats, peek, export, purge, compact, dead letters.

The same functions serve `edgeagent queue ...` whether the agent runs or not: with the agent
running, the CLI asks it over its control socket (control.py) and the agent runs them on its
live stores, so its counters stay right; otherwise the CLI opens the stores itself.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import zstandard
from google.protobuf.message import DecodeError, Message

from edgeagent.errors import CorruptRecordError
from edgeagent.queue import batchkey, maintenance, record
from edgeagent.queue.clocksteps import shift_of
from edgeagent.queue.ops import KEY
from edgeagent.queue.store import QueueStore, Table
from edgeagent.signals import Signal, count_items
from otel.otlpjson import to_otlp_json


def stats(stores: list[QueueStore]) -> dict[str, Any]:
    out: dict[str, Any] = {"stores": []}
    for store in stores:
        now_ms = store.clock.wall() * 1000
        queues = {}
        for queue in store.queues.values():
            queues[queue.name] = {
                "entries": queue.entries, "items": queue.items, "bytes": queue.bytes,
                "oldest_age_seconds": record.age_seconds(queue.oldest_ms, now_ms),
                "capacity": {"size": queue.capacity.size, "sizer": queue.capacity.sizer,
                             "used": queue.capacity_used()},
            }
        out["stores"].append({
            "directory": store.directory, "file_bytes": store.file_size(), "pages_in_use_bytes": store.pages_in_use,
            "max_size_bytes": store.limits.max_size, "full_policy": store.limits.full_policy,
            "dead_letters": store.deadletter_entries, "queues": queues,
        })
    return out


def table_records(store: QueueStore, table: Table) -> int:
    """Records in a stage's sub-database (tail sampling's buffer)."""
    with store.reading(table) as txn:
        return int(txn.stat(table.db)["entries"])  # the handle read inside the gate: reading's own


@dataclass
class Read:
    """One queue record as the commands show it: its request, or why it does not decode (`header`
    None). The commands show such a record and go on; the agent quarantines it when it reaches it."""

    seq: int
    header: record.RecordHeader | None
    body: bytes = b""
    error: str = ""


def records(store: QueueStore, queue_name: str, limit: int = 0) -> Iterator[Read]:
    """The records of a queue with their serialized requests, in order, read in one snapshot."""
    queue = store.queues[queue_name]
    if queue.db is None:
        return
    decompressor = zstandard.ZstdDecompressor()
    with store.reading(queue) as txn:
        for count, (key, value) in enumerate(txn.cursor(), start=1):
            seq = KEY.unpack(key)[0]
            try:
                header = record.decode_header(value)
                read = Read(seq, header, record.decode_body(value, header, decompressor))
            except CorruptRecordError as exc:
                read = Read(seq, None, error=str(exc))
            yield read
            if limit and count >= limit:
                return


def _parsed(signal: Signal, body: bytes) -> Message | None:
    """The request, or None when it does not parse."""
    try:
        return signal.request_class.FromString(body)
    except DecodeError:
        return None


def peek(stores: list[QueueStore], limit: int) -> list[dict[str, Any]]:
    out = []
    for store in stores:
        now_ms = store.clock.wall() * 1000
        for name, queue in store.queues.items():
            for read in records(store, name, limit):
                header = read.header
                if header is None:
                    out.append({"queue": name, "seq": read.seq, "error": read.error})
                    continue
                row = {"queue": name, "seq": read.seq, "signal": header.signal.label, "items": header.items,
                       "bytes": len(read.body), "attempts": header.attempts,
                       "age_seconds": record.age_seconds(header.enqueued_ms + shift_of(queue.shifts, read.seq), now_ms),
                       "batch_key": batchkey.describe(header.batch_key)}
                request = _parsed(header.signal, read.body)
                if request is None:
                    row["error"] = f"not a valid {header.signal.label} request"
                else:
                    row["checked_items"] = count_items(header.signal, request)
                out.append(row)
    return out


def export(stores: list[QueueStore], fmt: str) -> Iterator[bytes]:
    """Every queued request: OTLP/JSON lines, or protobuf messages each after a 4-byte big-endian length.
    Records that do not decode (or, for OTLP/JSON, do not parse) are left out: `peek` shows them."""
    for store in stores:
        for name in store.queues:
            for read in records(store, name):
                if read.header is None:
                    continue
                if fmt != "otlp-json":
                    yield struct.pack(">I", len(read.body)) + read.body
                elif (message := _parsed(read.header.signal, read.body)) is not None:
                    yield json.dumps({"queue": name, "signal": read.header.signal.label, **to_otlp_json(message)},
                                     separators=(",", ":")).encode() + b"\n"


def dead_letters(stores: list[QueueStore]) -> Iterator[bytes]:
    """A JSON line per dead letter with its description; signal and items null for one that does not
    decode. Read one at a time (the letters' requests are never all held)."""
    for store in stores:
        for letter in maintenance.each_dead_letter(store):
            try:
                header: record.RecordHeader | None = letter.header
            except CorruptRecordError:
                header = None
            row = {"directory": store.directory, "seq": letter.seq,
                   "signal": header.signal.label if header else None, "items": header.items if header else None,
                   **letter.description}
            yield json.dumps(row, separators=(",", ":"), default=str).encode() + b"\n"


def dead_letter_bodies(stores: list[QueueStore]) -> Iterator[bytes]:
    """A JSON line per dead letter: its description and, when it decodes, its request in OTLP/JSON."""
    for store in stores:
        for letter in maintenance.each_dead_letter(store):
            line: dict[str, Any] = {"seq": letter.seq, "description": letter.description}
            try:
                message = _parsed(letter.header.signal, letter.body())
            except CorruptRecordError:
                message = None
            if message is not None:
                line.update(to_otlp_json(message))
            yield json.dumps(line, separators=(",", ":")).encode() + b"\n"


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


async def replay(stores: list[QueueStore], seqs: list[int] | None) -> dict[str, Any]:
    """Queue dead letters again; those whose queue no exporter of the config has are kept, and said why."""
    replayed, kept = 0, Counter[str]()
    for store in stores:
        moved, left = await maintenance.replay_dead_letters(store, seqs)
        replayed += moved
        kept.update(left)
    out: dict[str, Any] = {"replayed": replayed, "kept": sum(kept.values())}
    if kept:
        out["why_kept"] = (f"no exporter of the config sends the queue{'s' if len(kept) > 1 else ''} "
                           f"{', '.join(sorted(kept))} any more: name it again to replay them, or purge them "
                           f"(edgeagent queue dead-letter purge --yes SEQ...)")
    return out


async def purge_dead_letters(stores: list[QueueStore], seqs: list[int] | None) -> int:
    return sum([await maintenance.purge_dead_letters(store, seqs) for store in stores])


