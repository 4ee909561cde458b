"""Durable queues in one LMDB environment.

Design note
===========
Invariants
  * `put()` returns only after the write transaction that holds the record has committed
    (and, with `sync=True`, the default, after LMDB's fsync). Receivers answer clients only
    after that: an OK means the data is on disk.
  * A record leaves its queue only by `ack()` (delivered), `dead_letter()` (permanently
    rejected: moved to the dead-letter sub-database in the same transaction) or an explicit,
    counted drop. Never silently.
  * Records are handed out in key order; per queue, keys are big-endian sequence numbers, so
    LMDB's B-tree order is arrival order.

Ownership
  * One writer thread owns every write to the environment (py-lmdb transactions belong to
    the thread that opened them). It takes all pending operations, applies them in one
    transaction and commits once: group commit, so throughput grows with concurrency instead
    of being capped by fsyncs. zstd compression also runs there, off the event loop.
  * In-memory state (counters, leases) belongs to the event loop; the writer reports each
    commit's effect back to the loop, which applies it.

Key layout
  * `q:<queue name>`  key: 8-byte big-endian sequence; value: a record (record.py):
    an 18-byte header (format version, signal, codec, flags, item count, enqueue time in
    unix ms, attempts) followed by the zstd-compressed serialized export request.
  * `meta`            key: `stats:<queue name>`; value: total items and bytes of that queue,
    updated in the same transaction as the records they count, so they are always exact
    and opening a large backlog needs no scan.
  * `deadletter`      key: 8-byte big-endian sequence; value: 4-byte length, a JSON
    description (queue, status, reason, time) and the original record.

Crash and restart
  * LMDB transactions are atomic: after a crash the environment holds exactly the
    committed transactions. Leases live only in memory, so records that were leased but not
    acknowledged are read again after a restart (at-least-once; duplicates are limited to
    what was in flight).
  * A data file that LMDB cannot open is moved aside with a timestamp and a fresh queue
    starts; a record that does not decode is moved to the dead-letter store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import queue as thread_queue
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb
import zstandard

from edgeagent.errors import CorruptRecordError, QueueFullError, ShutdownError
from edgeagent.queue import record
from edgeagent.queue.compaction import compact, copy_compacted, rebound_due, swap_in
from edgeagent.signals import Signal

log = logging.getLogger(__name__)

_KEY = struct.Struct(">Q")
_STATS = struct.Struct(">QQ")
_MAX_OPS_PER_COMMIT = 1024
_MAX_SCAN = 10_000  # records a lease looks at while gathering one batch key
# LMDB reserves address space, not disk: the file grows only as pages are used.
DEFAULT_MAP_SIZE = (64 << 30) if sys.maxsize > 2**32 else (1 << 30)


@dataclass
class Lease:
    """Records handed to one consumer; `ack`, `release` or `dead_letter` ends it."""

    queue: "DurableQueue"
    seqs: list[int]
    bodies: list[bytes]
    items: int
    attempts: int
    corrupt: list[tuple[int, str]] = field(default_factory=list)
    done: bool = False


@dataclass
class _Put:
    queue: "DurableQueue"
    body: bytes
    items: int
    signal: Signal
    future: asyncio.Future
    batch_key: bytes = b""


@dataclass
class _Delete:
    queue: "DurableQueue"
    seqs: list[int]
    future: asyncio.Future
    dead_letter: dict[str, Any] | None = None


@dataclass
class _SetAttempts:
    queue: "DurableQueue"
    seqs: list[int]
    attempts: int
    future: asyncio.Future


class DurableQueue:
    """One named FIFO of export requests inside a `QueueStore`."""

    def __init__(self, store: "QueueStore", name: str, signal: Signal, capacity: int):
        self.store = store
        self.name = name
        self.signal = signal
        self.capacity = capacity  # entries, as otelcol's sending_queue.queue_size
        self.db = store.env.open_db(f"q:{name}".encode())
        self.entries = 0
        self.items = 0
        self.bytes = 0
        self.oldest_ms = 0
        self.next_seq = 1  # owned by the writer thread after open
        self._pending_puts = 0
        self._leased: dict[int, int] = {}  # seq -> items
        self._leased_items = 0
        self._read_from = 0
        self._available = asyncio.Event()
        self._grew = asyncio.Event()
        self._lease_lock = asyncio.Lock()
        self._load()

    def _load(self) -> None:
        with self.store.env.begin(db=self.db) as txn:
            self.entries = txn.stat(self.db)["entries"]
            cursor = txn.cursor()
            if cursor.last():
                self.next_seq = _KEY.unpack(cursor.key())[0] + 1
            if cursor.first():
                self._read_from = _KEY.unpack(cursor.key())[0]
                self.oldest_ms = _enqueued_ms(cursor.value())
            stats = txn.get(self._stats_key(), db=self.store.meta_db)
        if stats is not None:
            self.items, self.bytes = _STATS.unpack(stats)
        elif self.entries:
            self.items, self.bytes = self._scan_totals()
        if self.entries:
            self._available.set()

    def _scan_totals(self) -> tuple[int, int]:
        items = size = 0
        with self.store.env.begin(db=self.db) as txn:
            for _, value in txn.cursor():
                size += len(value)
                try:
                    items += record.decode_header(value).items
                except CorruptRecordError:
                    pass
        return items, size

    def _stats_key(self) -> bytes:
        return f"stats:{self.name}".encode()

    # ---- producing -------------------------------------------------------------------------

    def reserve(self) -> None:
        """Claim room for one entry or raise QueueFullError (retryable) when at capacity."""
        if self.capacity and self.entries + self._pending_puts >= self.capacity:
            raise QueueFullError(f"queue {self.name} is full ({self.capacity} entries)", retry_after=5.0)
        self._pending_puts += 1

    def unreserve(self) -> None:
        self._pending_puts -= 1

    # ---- consuming -------------------------------------------------------------------------

    @property
    def available_items(self) -> int:
        return self.items - self._leased_items

    @property
    def available_entries(self) -> int:
        return self.entries - len(self._leased)

    async def wait_available(self) -> None:
        await self._available.wait()

    async def wait_items(self, count: int, deadline: float) -> None:
        """Wait until `count` items are available or the loop clock reaches `deadline`."""
        loop = asyncio.get_running_loop()
        while self.available_items < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._grew.clear()
            try:
                await asyncio.wait_for(self._grew.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def lease(self, max_items: int, max_entries: int = 0) -> Lease | None:
        """The oldest unleased records, up to `max_items` items (at least one record), or None if empty.

        All records of a lease share the batch key of the first one; records with other keys are
        left for later leases."""
        async with self._lease_lock:
            if self.available_entries <= 0:
                self._available.clear()
                return None
            skip = frozenset(seq for seq in self._leased if seq >= self._read_from)
            found = await asyncio.to_thread(self._read, self._read_from, skip, max_items, max_entries)
            records, bodies, attempts, corrupt, last_seq, first_skipped = found
            if first_skipped is not None:
                self._read_from = first_skipped
            elif last_seq is not None:
                self._read_from = last_seq + 1
            for seq, items in records:
                self._leased[seq] = items
            for seq, _ in corrupt:
                self._leased[seq] = 0
            items = sum(items for _, items in records)
            self._leased_items += items
            if self.available_entries <= 0:
                self._available.clear()
            if not records and not corrupt:
                return None
            return Lease(self, [seq for seq, _ in records], bodies, items, attempts, corrupt)

    def _read(self, start: int, skip: frozenset[int], max_items: int, max_entries: int):
        """Runs in a worker thread: read and decompress the next records in key order."""
        records: list[tuple[int, int]] = []
        bodies: list[bytes] = []
        corrupt: list[tuple[int, str]] = []
        items = attempts = 0
        last_seq = first_skipped = None
        batch_key = None
        scanned = 0
        decompressor = zstandard.ZstdDecompressor()
        with self.store.gate.shared(), self.store.env.begin(db=self.db, buffers=True) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_KEY.pack(start)):
                return records, bodies, attempts, corrupt, last_seq, first_skipped
            for key, value in cursor:
                seq = _KEY.unpack(key)[0]
                if seq in skip:
                    continue
                scanned += 1
                if scanned > _MAX_SCAN:
                    break
                try:
                    header = record.decode_header(value)
                    if batch_key is None:
                        batch_key = header.batch_key
                    elif header.batch_key != batch_key:
                        if first_skipped is None:
                            first_skipped = seq
                        continue
                    if records and (items + header.items > max_items or (max_entries and len(records) >= max_entries)):
                        break
                    bodies.append(record.decode_body(value, header, decompressor))
                except CorruptRecordError as exc:
                    corrupt.append((seq, str(exc)))
                    last_seq = seq
                    continue
                records.append((seq, header.items))
                items += header.items
                attempts = max(attempts, header.attempts)
                last_seq = seq
                if items >= max_items or (max_entries and len(records) >= max_entries):
                    break
        return records, bodies, attempts, corrupt, last_seq, first_skipped

    def _end_lease(self, lease: Lease) -> list[int]:
        if lease.done:
            raise RuntimeError("lease already ended")
        lease.done = True
        seqs = lease.seqs + [seq for seq, _ in lease.corrupt]
        for seq in seqs:
            self._leased_items -= self._leased.pop(seq, 0)
        return seqs

    def release(self, lease: Lease, attempts: int | None = None) -> Any:
        """Give the records back; they are handed out again first. Optionally record the attempts made."""
        seqs = self._end_lease(lease)
        if seqs:
            self._read_from = min(self._read_from, min(seqs))
            self._available.set()
        if attempts is not None and lease.seqs:
            return self.store._submit(lambda fut: _SetAttempts(self, lease.seqs, attempts, fut))
        return None

    async def ack(self, lease: Lease) -> None:
        """Delete delivered records."""
        seqs = self._end_lease(lease)
        await self.store._submit(lambda fut: _Delete(self, seqs, fut))

    async def dead_letter(self, lease: Lease, description: dict[str, Any]) -> None:
        """Move records to the dead-letter store with the reason they were rejected."""
        seqs = self._end_lease(lease)
        await self.store._submit(lambda fut: _Delete(self, seqs, fut, dead_letter=dict(description, queue=self.name)))

    # ---- bookkeeping applied on the loop after each commit ---------------------------------

    def _apply(self, entries: int, items: int, size: int, oldest_ms: int) -> None:
        self.entries += entries
        self.items += items
        self.bytes += size
        self.oldest_ms = oldest_ms
        if entries > 0:
            self._grew.set()
        if self.available_entries > 0:
            self._available.set()


class _Gate:
    """Readers share the environment; a live compaction needs it alone (it closes and reopens it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass
class _Compact:
    future: asyncio.Future
    queue: Any = None


class QueueStore:
    """One LMDB environment with its writer thread; hands out `DurableQueue`s by name."""

    def __init__(self, directory: str, *, sync: bool = True, map_size: int = DEFAULT_MAP_SIZE,
                 compression_level: int = 1, lock_timeout: float = 1.0, compact_on_start: bool = False,
                 compaction_scratch: str | None = None, on_corrupt: Callable[[str], None] | None = None):
        self.compact_on_start = compact_on_start
        self.compaction_scratch = compaction_scratch
        self.directory = directory
        self.lock_timeout = lock_timeout
        self._lock_file: Any = None
        self.sync = sync
        self.map_size = map_size
        self.compression_level = compression_level
        self.on_corrupt = on_corrupt
        self.env: lmdb.Environment | None = None
        self.meta_db = None
        self.deadletter_db = None
        self.queues: dict[str, DurableQueue] = {}
        self._ops: thread_queue.SimpleQueue = thread_queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.deadletter_entries = 0
        self.compactions = 0
        self.gate = _Gate()

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self._lock_file = _lock_directory(self.directory, self.lock_timeout)
        if self.compact_on_start and os.path.exists(os.path.join(self.directory, "data.mdb")):
            try:
                compact(self.directory, self.compaction_scratch)
            except lmdb.Error as exc:
                log.error("queue compaction failed; continuing with the uncompacted file", exc_info=exc)
        try:
            self.env = self._open_env()
        except lmdb.Error as exc:
            moved = _move_aside(self.directory)
            message = f"queue data file in {self.directory} does not open ({exc}); moved it to {moved} and started a fresh queue"
            log.error(message)
            if self.on_corrupt:
                self.on_corrupt(message)
            self.env = self._open_env()
        self._open_dbs()
        with self.env.begin(db=self.deadletter_db) as txn:
            self.deadletter_entries = txn.stat(self.deadletter_db)["entries"]

    def _open_dbs(self) -> None:
        self.meta_db = self.env.open_db(b"meta")
        self.deadletter_db = self.env.open_db(b"deadletter")
        for queue in self.queues.values():
            queue.db = self.env.open_db(f"q:{queue.name}".encode())

    def file_size(self) -> int:
        try:
            return os.path.getsize(os.path.join(self.directory, "data.mdb"))
        except OSError:
            return 0

    def live_bytes(self) -> int:
        return sum(queue.bytes for queue in self.queues.values())

    def compact_now(self) -> asyncio.Future:
        """Compact the live environment between two commits; resolves to (bytes before, bytes after)."""
        return self._submit(lambda fut: _Compact(fut))

    async def compact_on_rebound(self, needed_mib: int, trigger_mib: int, interval: float) -> None:
        """Run until cancelled: compact when the file grew large and the live data shrank (otelcol's on_rebound)."""
        while True:
            await asyncio.sleep(interval)
            if rebound_due(self.file_size(), self.live_bytes(), needed_mib, trigger_mib):
                try:
                    await self.compact_now()
                except Exception:  # logged by the writer; try again at the next check
                    pass

    def _compact_live(self) -> tuple[int, int]:
        """Runs on the writer thread: no commit is in progress, and the gate keeps readers out during the swap."""
        before = self.file_size()
        started = time.monotonic()
        staged = copy_compacted(self.env, self.directory, self.compaction_scratch)
        with self.gate.exclusive():
            self.env.close()
            swap_in(staged, self.directory)
            self.env = lmdb.open(self.directory, map_size=self.map_size, max_dbs=64, sync=self.sync,
                                 metasync=self.sync, readahead=False, subdir=True)
            self._open_dbs()
        after = self.file_size()
        log.info("queue compacted", extra={"directory": self.directory, "bytes_before": before, "bytes_after": after,
                                           "seconds": round(time.monotonic() - started, 3)})
        return before, after

    def _open_env(self) -> lmdb.Environment:
        env = lmdb.open(self.directory, map_size=self.map_size, max_dbs=64, sync=self.sync, metasync=self.sync,
                        readahead=False, subdir=True)
        # Touch the B-tree so that a corrupted file fails here, not later in a consumer.
        with env.begin() as txn:
            for _ in txn.cursor():
                pass
        return env

    def queue(self, name: str, signal: Signal, capacity: int = 0) -> DurableQueue:
        if name not in self.queues:
            self.queues[name] = DurableQueue(self, name, signal, capacity)
        return self.queues[name]

    def start(self) -> None:
        """Start the writer thread; call from the event loop that will await puts."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name=f"lmdb-writer:{self.directory}", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        """Finish every pending commit, stop the writer and close the environment. Idempotent."""
        if self._writer is not None:
            self._closing = True
            self._ops.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self.env is not None:
            self.env.close()
            self.env = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # ---- writes ----------------------------------------------------------------------------

    async def put(self, targets: list[DurableQueue], body: bytes, items: int, signal: Signal,
                  batch_key: bytes = b"") -> None:
        """Append one request to every queue in `targets` in a single commit; returns once durable.

        `batch_key` (the batch processor's metadata_keys values) keeps records with different keys
        out of one upstream request."""
        if self._closing or self._writer is None:
            raise ShutdownError("the queue is closing")
        reserved: list[DurableQueue] = []
        try:
            for target in targets:
                target.reserve()
                reserved.append(target)
            futures = []
            for target in targets:
                future = self._loop.create_future()
                self._ops.put(_Put(target, body, items, signal, future, batch_key))
                futures.append(future)
            await asyncio.gather(*futures)
        finally:
            for target in reserved:
                target.unreserve()

    def _submit(self, make_op: Callable[[asyncio.Future], Any]) -> asyncio.Future:
        future = self._loop.create_future()
        if self._writer is None:
            future.set_exception(ShutdownError("the queue is closed"))
            return future
        self._ops.put(make_op(future))
        return future

    def _write_loop(self) -> None:
        compressor = zstandard.ZstdCompressor(level=self.compression_level)
        stopping = False
        while not stopping:
            ops = [self._ops.get()]
            while len(ops) < _MAX_OPS_PER_COMMIT:
                try:
                    ops.append(self._ops.get_nowait())
                except thread_queue.Empty:
                    break
            if None in ops:
                stopping = True
                ops = [op for op in ops if op is not None]
                # anything queued behind the stop marker is still committed
                while True:
                    try:
                        op = self._ops.get_nowait()
                    except thread_queue.Empty:
                        break
                    if op is not None:
                        ops.append(op)
            compactions = [op for op in ops if isinstance(op, _Compact)]
            ops = [op for op in ops if not isinstance(op, _Compact)]
            if ops:
                self._commit(ops, compressor)
            for op in compactions:
                self._run_compaction(op)

    def _run_compaction(self, op: _Compact) -> None:
        try:
            result = self._compact_live()
        except Exception as exc:  # a failed compaction leaves the old file in place
            log.error("queue compaction failed; continuing with the uncompacted file", exc_info=exc)
            self._loop.call_soon_threadsafe(_settle, op.future, None, exc)
            return
        self.compactions += 1
        self._loop.call_soon_threadsafe(_settle, op.future, result, None)

    def _commit(self, ops: list[Any], compressor: zstandard.ZstdCompressor) -> None:
        now_ms = int(time.time() * 1000)
        encoded: dict[int, bytes] = {}
        for op in ops:
            if isinstance(op, _Put):
                encoded[id(op)] = record.encode(op.signal, op.items, now_ms, op.body, compressor,
                                                batch_key=op.batch_key)
        try:
            effects = self._transaction(ops, encoded, now_ms)
        except lmdb.MapFullError:
            # Never let a full map take the process down: refuse the new data, keep the deletes.
            log.error("queue storage in %s reached its map size; refusing new data", self.directory)
            effects = self._transaction([op for op in ops if not isinstance(op, _Put)], encoded, now_ms)
            full = QueueFullError("queue storage is full", retry_after=5.0)
            failures = [(op.future, full) for op in ops if isinstance(op, _Put)]
            self._loop.call_soon_threadsafe(self._resolve, effects, failures)
            return
        except Exception as exc:  # a disk error: fail this batch loudly, keep serving
            log.exception("queue commit failed in %s", self.directory)
            self._loop.call_soon_threadsafe(self._resolve, {}, [(op.future, exc) for op in ops])
            return
        self._loop.call_soon_threadsafe(self._resolve, effects, [])

    def _transaction(self, ops: list[Any], encoded: dict[int, bytes], now_ms: int) -> dict:
        effects: dict[DurableQueue, list[int]] = {}
        done: list[asyncio.Future] = []
        oldest: dict[DurableQueue, int] = {}
        next_seqs = {}
        dead_lettered = 0
        with self.env.begin(write=True) as txn:
            for op in ops:
                queue = op.queue
                delta = effects.setdefault(queue, [0, 0, 0])
                if queue not in next_seqs:
                    next_seqs[queue] = queue.next_seq
                if isinstance(op, _Put):
                    value = encoded[id(op)]
                    txn.put(_KEY.pack(next_seqs[queue]), value, db=queue.db, append=True)
                    next_seqs[queue] += 1
                    delta[0] += 1
                    delta[1] += op.items
                    delta[2] += len(value)
                elif isinstance(op, _Delete):
                    for seq in op.seqs:
                        key = _KEY.pack(seq)
                        value = txn.pop(key, db=queue.db)
                        if value is None:
                            continue
                        delta[0] -= 1
                        delta[2] -= len(value)
                        try:
                            delta[1] -= record.decode_header(value).items
                        except CorruptRecordError:
                            pass
                        if op.dead_letter is not None:
                            self._put_dead_letter(txn, op.dead_letter, value, now_ms)
                            dead_lettered += 1
                elif isinstance(op, _SetAttempts):
                    for seq in op.seqs:
                        key = _KEY.pack(seq)
                        value = txn.get(key, db=queue.db)
                        if value is not None:
                            txn.put(key, record.with_attempts(value, op.attempts), db=queue.db)
                done.append(op.future)
            for queue, delta in effects.items():
                if delta[1] or delta[2]:
                    txn.put(queue._stats_key(), _STATS.pack(max(queue.items + delta[1], 0), max(queue.bytes + delta[2], 0)),
                            db=self.meta_db)
                cursor = txn.cursor(db=queue.db)
                oldest[queue] = _enqueued_ms(cursor.value()) if cursor.first() else 0
        for queue, seq in next_seqs.items():
            queue.next_seq = seq
        return {"deltas": effects, "oldest": oldest, "done": done, "dead_lettered": dead_lettered}

    def _put_dead_letter(self, txn: lmdb.Transaction, description: dict[str, Any], value: bytes, now_ms: int) -> None:
        cursor = txn.cursor(db=self.deadletter_db)
        seq = _KEY.unpack(cursor.key())[0] + 1 if cursor.last() else 1
        meta = json.dumps(dict(description, time_ms=now_ms), separators=(",", ":")).encode()
        txn.put(_KEY.pack(seq), struct.pack(">I", len(meta)) + meta + value, db=self.deadletter_db, append=True)

    def _resolve(self, effects: dict, failures: list[tuple[asyncio.Future, BaseException]]) -> None:
        """Runs on the event loop: apply a commit's effect to in-memory state, then wake the waiters."""
        for queue, (entries, items, size) in effects.get("deltas", {}).items():
            queue._apply(entries, items, size, effects["oldest"].get(queue))
        self.deadletter_entries += effects.get("dead_lettered", 0)
        for future in effects.get("done", []):
            if not future.done():
                future.set_result(None)
        for future, exc in failures:
            if not future.done():
                future.set_exception(exc)

    # ---- reads for the CLI and status ------------------------------------------------------

    def dead_letters(self, limit: int = 0) -> list[tuple[int, dict[str, Any], bytes]]:
        out = []
        with self.gate.shared(), self.env.begin(db=self.deadletter_db) as txn:
            for key, value in txn.cursor():
                (length,) = struct.unpack_from(">I", value)
                meta = json.loads(value[4:4 + length])
                out.append((_KEY.unpack(key)[0], meta, value[4 + length:]))
                if limit and len(out) >= limit:
                    break
        return out


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _enqueued_ms(value: bytes) -> int:
    try:
        return record.decode_header(value).enqueued_ms
    except CorruptRecordError:
        return 0


class StorageLockedError(RuntimeError):
    pass


def _lock_directory(directory: str, timeout: float) -> Any:
    """Take the agent's exclusive lock on a queue directory: two agents must not drain one queue."""
    handle = open(os.path.join(directory, "edgeagent.lock"), "a+")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise StorageLockedError(f"another edgeagent process uses the queue in {directory}; stop it or "
                                         f"give this one another directory") from None
            time.sleep(0.05)


def _move_aside(directory: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = os.path.join(directory, f"corrupt-{stamp}")
    os.makedirs(target, exist_ok=True)
    for name in ("data.mdb", "lock.mdb"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            os.replace(path, os.path.join(target, name))
    return target
