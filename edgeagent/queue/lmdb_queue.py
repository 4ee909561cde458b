"""Durable queues in one LMDB environment.

Design note
===========
Invariants
  * `put()` returns only after the write transaction that holds the record has committed
    (and, with `sync=True`, the default, after LMDB's fsync). Receivers answer clients only
    after that: an OK means the data is on disk.
  * A record leaves its queue only by `ack()` (delivered), `dead_letter()` (permanently
    rejected: moved to the dead-letter sub-database in the same transaction) or an explicit,
    counted drop (`drop_oldest` when full, `max_age`, a purge). Never silently.
  * Records are handed out in key order; per queue, keys are big-endian sequence numbers, so
    LMDB's B-tree order is arrival order.
  * The pages in use stay under the storage budget (`max_size`); LMDB's map is set with
    headroom above it, so a full map or a full filesystem (ENOSPC) is a refusal or an
    eviction, never a crash.

Ownership
  * One writer thread owns every write to the environment (py-lmdb transactions belong to
    the thread that opened them). It takes all pending operations, applies them in one
    transaction and commits once: group commit, so throughput grows with concurrency instead
    of being capped by fsyncs. Requests are zstd-compressed by `put` on the event loop before
    they reach it, once however many queues they go to. Compressing on other threads costs
    more than it saves: each hand-over waits for the GIL, which the busy event loop holds.
  * The writer owns the authoritative totals (entries, items, bytes per queue, pages in use);
    the event loop owns leases and a mirror of the totals, which the writer updates after
    each commit.

Key layout
  * `q:<queue name>`  key: 8-byte big-endian sequence; value: a record (record.py): a
    header (format version, signal, codec, flags, item count, enqueue time in unix ms,
    attempts, optional batch key) followed by the zstd-compressed export request.
  * `meta`            key: `stats:<queue name>`; value: total items and bytes of that queue,
    written in the same transaction as the records they count, so they are always exact
    and opening a large backlog needs no scan.
  * `deadletter`      see deadletter.py.

Several exporters
  * Each exporter has its own queue per signal; a request fanned out to two exporters is
    written to both queues in one transaction. A slow or offline exporter never holds back
    another, and every queue keeps the simple "delete on ack" invariant. The price is disk:
    N exporters store N copies. On an edge device that usually has one upstream this costs
    nothing; with two it doubles the queue, which the budget (`max_size_mib`) bounds. One
    stored copy with a cursor per exporter would save that space but would need reference
    counts for eviction and out-of-order acks across exporters.

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
import errno
import fcntl
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
from edgeagent.queue import deadletter, record
from edgeagent.queue.compaction import compact, copy_compacted, rebound_due, swap_in
from edgeagent.queue.limits import QueueCapacity, StorageLimits, footprint
from edgeagent.signals import Signal

log = logging.getLogger(__name__)

_KEY = struct.Struct(">Q")
_STATS = struct.Struct(">QQ")
_MAX_OPS_PER_COMMIT = 1024
_MAX_SCAN = 10_000  # records a lease looks at while gathering one batch key
_SWEEP_INTERVAL = 1.0  # seconds between max_age sweeps
_LINGER = 0.010  # seconds a busy writer waits for more puts before it commits
_ENOUGH_TO_COMMIT = 1 << 20  # bytes of puts after which it stops waiting
_ACK_LINGER = 0.25  # seconds acks wait for company before they commit
_BALLAST_NAME = "reserve.ballast"
_BALLAST_BYTES = 2 << 20
# LMDB reserves address space, not disk: the file grows only as pages are used.
DEFAULT_MAP_SIZE = (64 << 30) if sys.maxsize > 2**32 else (1 << 30)

DropCallback = Callable[["DurableQueue", str, int, int], None]  # queue, reason, items, records


@dataclass
class Lease:
    """Records handed to one consumer; `ack`, `release` or `dead_letter` ends it."""

    queue: "DurableQueue"
    seqs: list[int]
    bodies: list[bytes]
    items: int
    attempts: int
    done: bool = False


@dataclass
class _Put:
    queue: "DurableQueue"
    payload: bytes  # the request, zstd-compressed already
    items: int
    signal: Signal
    future: asyncio.Future
    batch_key: bytes = b""
    attributes: bytes = b""  # a serialized KeyValueList for every record, added when read (record.py)


@dataclass
class _Delete:
    queue: "DurableQueue"
    seqs: list[int]
    future: asyncio.Future
    dead_letter: dict[str, Any] | None = None
    reason: str = ""  # set for a counted drop (purge)
    replacement: list[bytes] | None = None  # dead-letter these records instead of the deleted ones


@dataclass
class _SetAttempts:
    queue: "DurableQueue"
    seqs: list[int]
    attempts: int
    future: asyncio.Future


@dataclass
class _Call:
    """Run a function on the writer thread (dead-letter replay and purge, compaction)."""

    function: Callable[[], Any]
    future: asyncio.Future


@dataclass
class _Atomic:
    """Run `function(writer)` inside the next group commit, all or nothing (a nested transaction):
    how a stage moves data between sub-databases without loss or duplicates across a crash."""

    function: Callable[["TxnWriter"], Any]
    future: asyncio.Future


@dataclass
class _Totals:
    entries: int = 0
    items: int = 0
    bytes: int = 0


@dataclass
class _Commit:
    """What one transaction did, reported back to the event loop."""

    deltas: dict["DurableQueue", _Totals] = field(default_factory=dict)
    oldest: dict["DurableQueue", int] = field(default_factory=dict)
    done: list[asyncio.Future] = field(default_factory=list)
    failed: list[tuple[asyncio.Future, BaseException]] = field(default_factory=list)
    drops: dict[tuple["DurableQueue", str], list[int]] = field(default_factory=dict)
    dead_lettered: int = 0

    def delta(self, queue: "DurableQueue") -> _Totals:
        return self.deltas.setdefault(queue, _Totals())


class DurableQueue:
    """One named FIFO of export requests inside a `QueueStore`."""

    def __init__(self, store: "QueueStore", name: str, signal: Signal, capacity: QueueCapacity):
        self.store = store
        self.name = name
        self.signal = signal
        self.capacity = capacity
        self.db = store.env.open_db(f"q:{name}".encode())
        # mirror of the writer's totals, owned by the event loop
        self.entries = 0
        self.items = 0
        self.bytes = 0
        self.oldest_ms = 0
        # owned by the writer thread
        self.stored = _Totals()
        self.next_seq = 1
        self._leased: dict[int, int] = {}  # seq -> items; the writer only tests membership
        self._leased_items = 0
        self.refused_items = 0  # items of puts that found the queue full; the writer adds, a scrape reads
        self._read_from = 0
        self._available = asyncio.Event()
        self._grew = asyncio.Event()
        self._lease_lock = asyncio.Lock()
        self._load()

    def _load(self) -> None:
        with self.store.env.begin(db=self.db) as txn:
            entries = txn.stat(self.db)["entries"]
            cursor = txn.cursor()
            if cursor.last():
                self.next_seq = _KEY.unpack(cursor.key())[0] + 1
            if cursor.first():
                self._read_from = _KEY.unpack(cursor.key())[0]
                self.oldest_ms = _enqueued_ms(cursor.value())
            stats = txn.get(self._stats_key(), db=self.store.meta_db)
            items, size = _STATS.unpack(stats) if stats is not None else _scan_totals(txn, self.db)
        self.stored = _Totals(entries, items, size)
        self.entries, self.items, self.bytes = entries, items, size
        if entries:
            self._available.set()

    def _stats_key(self) -> bytes:
        return f"stats:{self.name}".encode()

    # ---- consuming -------------------------------------------------------------------------

    @property
    def available_items(self) -> int:
        return self.items - self._leased_items

    @property
    def available_entries(self) -> int:
        return self.entries - len(self._leased)

    def capacity_used(self) -> int:
        return self.capacity.used(self.entries, self.items, self.bytes)

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

    async def lease(self, max_items: int, max_entries: int = 0, newest_first: bool = False) -> Lease | None:
        """The oldest unleased records, up to `max_items` items (at least one record), or None if empty.

        All records of a lease share the batch key of the first one; records with other keys are
        left for later leases. `newest_first` takes the newest records instead (their bodies still
        in the order they were queued), so current data goes out before a backlog."""
        async with self._lease_lock:
            if self.available_entries <= 0:
                self._available.clear()
                return None
            if newest_first:
                found = await asyncio.to_thread(self._read, None, frozenset(self._leased), max_items, max_entries)
            else:
                skip = frozenset(seq for seq in self._leased if seq >= self._read_from)
                found = await asyncio.to_thread(self._read, self._read_from, skip, max_items, max_entries)
            records, bodies, attempts, corrupt, last_seq, first_skipped = found
            if newest_first:
                records.reverse()
                bodies.reverse()
            elif first_skipped is not None:
                self._read_from = first_skipped
            elif last_seq is not None:
                self._read_from = last_seq + 1
            for seq, items in records:
                self._leased[seq] = items
            if corrupt:
                self._quarantine(corrupt)
            items = sum(items for _, items in records)
            self._leased_items += items
            if self.available_entries <= 0:
                self._available.clear()
            if not records:
                return None
            return Lease(self, [seq for seq, _ in records], bodies, items, attempts)

    def _quarantine(self, corrupt: list[tuple[int, str]]) -> None:
        """Move records that do not decode to the dead-letter store; the queue goes on without them."""
        for seq, reason in corrupt:
            self._leased[seq] = 0
            log.error("queue record does not decode; moved it to the dead-letter store",
                      extra={"queue": self.name, "seq": seq, "reason": reason})
        seqs = [seq for seq, _ in corrupt]

        def settled(future: asyncio.Future) -> None:
            for seq in seqs:
                self._leased.pop(seq, None)
            if self.available_entries > 0:
                self._available.set()
        future = self.store._submit(lambda fut: _Delete(self, seqs, fut, dead_letter={
            "queue": self.name, "reason": "corrupt record: " + corrupt[0][1], "status": None}))
        future.add_done_callback(settled)
        if self.store.on_quarantine is not None:
            self.store.on_quarantine(self, len(seqs))

    def _read(self, start: int | None, skip: frozenset[int], max_items: int, max_entries: int):
        """Runs in a worker thread: read and decompress the next records in key order from `start`,
        or backwards from the newest when `start` is None."""
        records: list[tuple[int, int]] = []
        bodies: list[bytes] = []
        corrupt: list[tuple[int, str]] = []
        items = attempts = scanned = 0
        last_seq = first_skipped = None
        batch_key = None
        decompressor = zstandard.ZstdDecompressor()
        with self.store.gate.shared(), self.store.env.begin(db=self.db, buffers=True) as txn:
            cursor = txn.cursor()
            if start is None:
                if not cursor.last():
                    return records, bodies, attempts, corrupt, last_seq, first_skipped
                walk = cursor.iterprev()
            elif cursor.set_range(_KEY.pack(start)):
                walk = iter(cursor)
            else:
                return records, bodies, attempts, corrupt, last_seq, first_skipped
            for key, value in walk:
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
        seqs = lease.seqs
        for seq in seqs:
            self._leased_items -= self._leased.pop(seq, 0)
        return seqs

    def release(self, lease: Lease, attempts: int | None = None) -> Any:
        """Give the records back; they are handed out again first. Optionally record the attempts made."""
        seqs = self._end_lease(lease)
        if seqs:
            self._read_from = min(self._read_from, min(seqs))
            if self.available_entries > 0:
                self._available.set()
        if attempts is not None and lease.seqs:
            return self.store._submit(lambda fut: _SetAttempts(self, lease.seqs, attempts, fut))
        return None

    def ack(self, lease: Lease) -> asyncio.Future:
        """Delete delivered records; awaiting the returned future is optional.

        The records stay out of every lease until the delete commits. Acks linger in the writer so
        that many share one commit (less flash wear); a crash before that commit only means those
        records are delivered again."""
        if lease.done:
            raise RuntimeError("lease already ended")
        lease.done = True
        seqs = lease.seqs
        future = self.store._submit(lambda fut: _Delete(self, seqs, fut))
        future.add_done_callback(lambda done: self._acked(seqs, done))
        return future

    def _acked(self, seqs: list[int], future: asyncio.Future) -> None:
        for seq in seqs:
            self._leased_items -= self._leased.pop(seq, 0)
        if future.cancelled() or future.exception() is not None:  # still stored: hand them out again
            self._read_from = min(self._read_from, min(seqs, default=self._read_from))
        # between the commit and this callback `available_entries` undercounted, and a lease may
        # have found nothing and cleared the event: wake the consumers again
        if self.available_entries > 0:
            self._available.set()

    async def dead_letter(self, lease: Lease, description: dict[str, Any],
                          bodies: list[tuple[bytes, int]] | None = None) -> None:
        """Move records to the dead-letter store with the reason they were rejected.

        With `bodies` (request, items), those are stored instead of the lease's records: the parts
        of a split request that the upstream refused, while the rest was delivered."""
        seqs = self._end_lease(lease)
        now_ms = int(time.time() * 1000)
        replacement = None if bodies is None else [record.encode(self.signal, items, now_ms, body, None)
                                                   for body, items in bodies]
        await self.store._submit(lambda fut: _Delete(self, seqs, fut, dead_letter=dict(description, queue=self.name),
                                                     replacement=replacement))

    # ---- bookkeeping applied on the loop after each commit ---------------------------------

    def _apply(self, delta: _Totals, oldest_ms: int | None) -> None:
        self.entries += delta.entries
        self.items += delta.items
        self.bytes += delta.bytes
        if oldest_ms is not None:
            self.oldest_ms = oldest_ms
        if delta.entries > 0:
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


class QueueStore:
    """One LMDB environment with its writer thread; hands out `DurableQueue`s by name."""

    def __init__(self, directory: str, *, sync: bool = True, map_size: int = DEFAULT_MAP_SIZE,
                 limits: StorageLimits = StorageLimits(), compression_level: int = 1, lock_timeout: float = 1.0,
                 compact_on_start: bool = False, compaction_scratch: str | None = None,
                 on_corrupt: Callable[[str], None] | None = None, on_drop: DropCallback | None = None,
                 on_quarantine: Callable[[DurableQueue, int], None] | None = None):
        self.directory = directory
        self.sync = sync
        self.limits = limits
        self.map_size = limits.map_size(map_size)
        self.compression_level = compression_level
        self.lock_timeout = lock_timeout
        self.compact_on_start = compact_on_start
        self.compaction_scratch = compaction_scratch
        self.on_corrupt = on_corrupt
        self.on_drop = on_drop
        self.on_quarantine = on_quarantine
        self.env: lmdb.Environment | None = None
        self.meta_db = None
        self.deadletter_db = None
        self.queues: dict[str, DurableQueue] = {}
        self.page_size = 4096
        self.pages_in_use = 0  # bytes; owned by the writer
        self.deadletter_entries = 0
        self.compactions = 0
        self.full = False  # the last put was refused for lack of room
        self.gate = _Gate()
        self._lock_file: Any = None
        self._ops: thread_queue.SimpleQueue = thread_queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._last_sweep = 0.0
        self._previous_puts = 0
        self._compressor: zstandard.ZstdCompressor | None = None  # the writer thread's
        self._loop_compressor = zstandard.ZstdCompressor(level=compression_level)  # the event loop's

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
        except (lmdb.Error, CorruptRecordError) as exc:
            moved = _move_aside(self.directory)
            message = f"queue data file in {self.directory} does not open ({exc}); moved it to {moved} and started a fresh queue"
            log.error(message)
            if self.on_corrupt:
                self.on_corrupt(message)
            self.env = self._open_env()
        self._open_dbs()
        self._ensure_ballast()
        self.page_size = self.env.stat()["psize"]
        with self.env.begin() as txn:
            self.deadletter_entries = txn.stat(self.deadletter_db)["entries"]
            self.pages_in_use = self._measure_pages(txn)

    def _open_env(self) -> lmdb.Environment:
        env = lmdb.open(self.directory, map_size=self.map_size, max_dbs=64, sync=self.sync, metasync=self.sync,
                        readahead=False, subdir=True)
        try:
            _verify(env, os.path.join(self.directory, "data.mdb"))
        except (lmdb.Error, CorruptRecordError):
            env.close()
            raise
        return env

    def _open_dbs(self) -> None:
        self.meta_db = self.env.open_db(b"meta")
        self.deadletter_db = self.env.open_db(b"deadletter")
        for queue in self.queues.values():
            queue.db = self.env.open_db(f"q:{queue.name}".encode())

    def queue(self, name: str, signal: Signal, capacity: QueueCapacity = QueueCapacity()) -> DurableQueue:
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

    # ---- sizes -------------------------------------------------------------------------------

    def file_size(self) -> int:
        try:
            return os.path.getsize(os.path.join(self.directory, "data.mdb"))
        except OSError:
            return 0

    def live_bytes(self) -> int:
        return sum(queue.bytes for queue in self.queues.values())

    def _measure_pages(self, txn: lmdb.Transaction) -> int:
        """Bytes of pages in use by every sub-database (free pages excluded)."""
        pages = 0
        names = [name for name, _ in txn.cursor()]
        for name in names:
            try:
                stat = txn.stat(self.env.open_db(name, txn=txn, create=False))
            except lmdb.Error:
                continue
            pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        main = self.env.stat()
        pages += main["branch_pages"] + main["leaf_pages"] + main["overflow_pages"]
        return pages * self.page_size

    # ---- writes ----------------------------------------------------------------------------

    async def put(self, targets: list[DurableQueue], body: bytes, items: int, signal: Signal,
                  batch_key: bytes = b"", attributes: bytes = b"") -> None:
        """Append one request to every queue in `targets` in a single commit; returns once durable.

        `batch_key` (the batch processor's metadata_keys values) keeps records with different keys
        out of one upstream request. `attributes` (a serialized KeyValueList) are added to every
        span, log record or data point when the record is read. Raises QueueFullError (retryable)
        when there is no room."""
        if self._closing or self._writer is None:
            raise ShutdownError("the queue is closing")
        payload = self._loop_compressor.compress(body)
        futures = []
        for target in targets:
            future = self._loop.create_future()
            self._ops.put(_Put(target, payload, items, signal, future, batch_key, attributes))
            futures.append(future)
        await asyncio.gather(*futures)

    def atomic(self, function: Callable[["TxnWriter"], Any]) -> asyncio.Future:
        """Run `function(writer)` on the writer thread inside the next commit, all or nothing;
        the future resolves to its result once that commit is durable."""
        return self._submit(lambda fut: _Atomic(function, fut))

    def _submit(self, make_op: Callable[[asyncio.Future], Any]) -> asyncio.Future:
        future = self._loop.create_future()
        if self._writer is None:
            future.set_exception(ShutdownError("the queue is closed"))
            return future
        self._ops.put(make_op(future))
        return future

    def call(self, function: Callable[[], Any]) -> asyncio.Future:
        """Run `function` on the writer thread, between two commits."""
        return self._submit(lambda fut: _Call(function, fut))

    def _write_loop(self) -> None:
        self._compressor = zstandard.ZstdCompressor(level=self.compression_level)  # for atomic operations
        stopping = False
        wait = _SWEEP_INTERVAL if self.limits.max_age else None
        while not stopping:
            try:
                ops = [self._ops.get(timeout=wait)]
            except thread_queue.Empty:
                ops = []
            self._gather(ops)
            if None in ops:
                stopping = True
                ops = [op for op in ops if op is not None]
                while True:  # anything queued behind the stop marker is still committed
                    try:
                        op = self._ops.get_nowait()
                    except thread_queue.Empty:
                        break
                    if op is not None:
                        ops.append(op)
            calls = [op for op in ops if isinstance(op, _Call)]
            ops = [op for op in ops if not isinstance(op, _Call)]
            sweep = bool(self.limits.max_age) and time.monotonic() - self._last_sweep >= _SWEEP_INTERVAL
            if ops or sweep:
                self._commit(ops, sweep)
            for op in calls:
                self._run_call(op)

    def _gather(self, ops: list[Any]) -> None:
        """Take every pending operation, and linger briefly so that one commit carries more.

        Each synced commit rewrites several B-tree, free-list and meta pages besides the records
        (30 to 70 KiB here), so fewer, larger commits mean fewer bytes written per byte queued:
        less flash wear. Puts linger only when the previous commit already carried several (so a
        lone request is never delayed), until the commit carries _ENOUGH_TO_COMMIT bytes and
        never longer than _LINGER. Acks, which nobody waits for, linger up to _ACK_LINGER unless
        a put arrives; an ack commit rewrites LMDB's free list, which grows as a backlog drains.
        The price is duplicates after a crash: acks not yet committed are sent again."""
        while len(ops) < _MAX_OPS_PER_COMMIT:
            try:
                ops.append(self._ops.get_nowait())
            except thread_queue.Empty:
                break
        puts = sum(isinstance(op, (_Put, _Atomic)) for op in ops)  # both have a client waiting
        put_bytes = sum(len(op.payload) for op in ops if isinstance(op, _Put))
        if None in ops:
            linger = 0.0
        elif puts:
            linger = _LINGER if self._previous_puts >= 2 else 0.0
        else:
            linger = _ACK_LINGER if any(isinstance(op, _Delete) and op.dead_letter is None and not op.reason
                                        for op in ops) else 0.0
        deadline = time.monotonic() + linger
        while linger and len(ops) < _MAX_OPS_PER_COMMIT and put_bytes < _ENOUGH_TO_COMMIT:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                op = self._ops.get(timeout=remaining)
            except thread_queue.Empty:
                break
            ops.append(op)
            if op is None:
                break
            if isinstance(op, (_Put, _Atomic)):
                puts += 1
                put_bytes += len(op.payload) if isinstance(op, _Put) else 0
                if puts == 1:  # a put ends an ack linger: it has a client waiting
                    break
        self._previous_puts = puts

    def _run_call(self, op: _Call) -> None:
        try:
            result = op.function()
        except Exception as exc:  # reported to the caller, who logs it
            self._loop.call_soon_threadsafe(_settle, op.future, None, exc)
        else:
            self._loop.call_soon_threadsafe(_settle, op.future, result, None)

    def _commit(self, ops: list[Any], sweep: bool = False) -> None:
        now_ms = int(time.time() * 1000)
        encoded = {id(op): record.frame(op.signal, op.items, now_ms, op.payload, record.CODEC_ZSTD,
                                        batch_key=op.batch_key, attributes=op.attributes)
                   for op in ops if isinstance(op, _Put)}
        try:
            result = self._transaction(ops, encoded, now_ms, sweep)
        except lmdb.Error as exc:
            need = sum(footprint(len(value), self.page_size) for value in encoded.values())
            if not _out_of_space(exc, self.directory, need):
                log.exception("queue commit failed in %s", self.directory)
                self._report(_Commit(failed=[(op.future, exc) for op in ops]))
                return
            result = self._commit_when_out_of_space(ops, encoded, now_ms, exc)
        else:
            if not self.full and not os.path.exists(self._ballast_path()):
                self._ensure_ballast()  # room came back: rebuild the reserve
        self._report(result)

    def _commit_when_out_of_space(self, ops: list[Any], encoded: dict[int, bytes], now_ms: int,
                                  exc: Exception) -> _Commit:
        """The map or the filesystem is full: keep the deletes, then refuse or make room for the puts."""
        puts = [op for op in ops if isinstance(op, _Put)]
        others = [op for op in ops if not isinstance(op, _Put)]
        result = _Commit()
        # Deletes need free pages too (LMDB copies on write): the ballast's room lets them through.
        if self._drop_ballast():
            log.warning("queue storage is out of space; released the reserve so that deletes can proceed",
                        extra={"directory": self.directory})
        if others:
            try:
                result = self._transaction(others, encoded, now_ms)
            except lmdb.Error as retry_exc:
                log.error("queue storage in %s is out of space; even deletes fail: %s", self.directory, retry_exc)
                result.failed += [(op.future, retry_exc) for op in others]
        if puts and self.limits.full_policy == "drop_oldest":
            try:
                need = sum(footprint(len(encoded[id(op)]), self.page_size) for op in puts) * 4 + (1 << 20)
                evicted = self._transaction([], encoded, now_ms, evict_bytes=need)
                _merge(result, evicted)
                _merge(result, self._transaction(puts, encoded, now_ms))
                return result
            except lmdb.Error:
                pass
        self.full = True
        full = QueueFullError(f"queue storage in {self.directory} is out of space ({exc})", retry_after=5.0)
        result.failed += [(op.future, full) for op in puts]
        return result

    def _ballast_path(self) -> str:
        return os.path.join(self.directory, _BALLAST_NAME)

    def _ensure_ballast(self) -> None:
        """Keep a small reserve file: on a full filesystem, deleting it gives LMDB room to delete records."""
        path = self._ballast_path()
        if os.path.exists(path):
            return
        try:
            stat = os.statvfs(self.directory)
            if stat.f_bavail * stat.f_frsize < 4 * _BALLAST_BYTES:
                return
            with open(path, "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, _BALLAST_BYTES)
                os.fsync(handle.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _drop_ballast(self) -> bool:
        try:
            os.unlink(self._ballast_path())
            return True
        except OSError:
            return False

    def _transaction(self, ops: list[Any], encoded: dict[int, bytes], now_ms: int, sweep: bool = False,
                     evict_bytes: int = 0) -> _Commit:
        result = _Commit()
        state = _TxnState(stored={queue: _Totals(queue.stored.entries, queue.stored.items, queue.stored.bytes)
                                  for queue in self.queues.values()}, pages=self.pages_in_use)
        touched, next_seqs, stored = state.touched, state.next_seqs, state.stored
        with self.env.begin(write=True) as txn:
            if evict_bytes:
                state.pages -= self._evict(txn, result, stored, touched, evict_bytes, None, "disk_full")
            for op in ops:
                if isinstance(op, _Atomic):
                    self._run_atomic(op, txn, result, state, now_ms)
                    continue
                queue = op.queue
                touched.add(queue)
                if isinstance(op, _Put):
                    if self._append(txn, result, state, queue, encoded[id(op)], op.items):
                        result.done.append(op.future)
                    else:
                        queue.refused_items += op.items
                        result.failed.append((op.future, QueueFullError(
                            f"queue {queue.name} is full; retry later", retry_after=5.0)))
                elif isinstance(op, _Delete):
                    for seq in op.seqs:
                        value = txn.pop(_KEY.pack(seq), db=queue.db)
                        if value is None:
                            continue
                        items = _items_of(value)
                        _add(stored[queue], result.delta(queue), -1, -items, -len(value))
                        state.pages -= footprint(len(value), self.page_size)
                        if op.dead_letter is not None and op.replacement is None:
                            deadletter.put(txn, self.deadletter_db, op.dead_letter, value, now_ms)
                            result.dead_lettered += 1
                        elif op.reason:
                            result.drops.setdefault((queue, op.reason), []).append(items)
                    for value in op.replacement or ():
                        deadletter.put(txn, self.deadletter_db, op.dead_letter, value, now_ms)
                        result.dead_lettered += 1
                    result.done.append(op.future)
                else:  # _SetAttempts
                    for seq in op.seqs:
                        key = _KEY.pack(seq)
                        value = txn.get(key, db=queue.db)
                        if value is not None:
                            txn.put(key, record.with_attempts(value, op.attempts), db=queue.db)
                    result.done.append(op.future)
            if sweep:
                self._expire(txn, result, stored, touched, now_ms)
            for queue in touched:
                totals = stored[queue]
                txn.put(queue._stats_key(), _STATS.pack(max(totals.items, 0), max(totals.bytes, 0)), db=self.meta_db)
                cursor = txn.cursor(db=queue.db)
                result.oldest[queue] = _enqueued_ms(cursor.value()) if cursor.first() else 0
            measured = self._measure_pages(txn)
        # committed: the writer's state moves forward
        for queue in touched:
            queue.stored = stored[queue]
        for queue, seq in next_seqs.items():
            queue.next_seq = seq
        self.pages_in_use = measured
        if sweep:
            self._last_sweep = time.monotonic()
        return result

    def _append(self, txn: lmdb.Transaction, result: _Commit, state: "_TxnState", queue: DurableQueue,
                value: bytes, items: int) -> bool:
        """Append one encoded record to `queue`, making room by the full policy; False when it does not fit."""
        state.touched.add(queue)
        cost = footprint(len(value), self.page_size)
        room = self._make_room(txn, result, state.stored, state.touched, queue, items, len(value), cost, state.pages)
        if room is None:
            self.full = True
            return False
        seq = state.next_seqs.get(queue, queue.next_seq)
        txn.put(_KEY.pack(seq), value, db=queue.db, append=True)
        state.next_seqs[queue] = seq + 1
        _add(state.stored[queue], result.delta(queue), 1, items, len(value))
        state.pages += cost - room
        self.full = False
        return True

    def _run_atomic(self, op: _Atomic, txn: lmdb.Transaction, result: _Commit, state: "_TxnState",
                    now_ms: int) -> None:
        """Run an atomic operation in a nested transaction; on failure nothing of it remains."""
        before = state.copy()
        partial = _Commit()
        try:
            with self.env.begin(write=True, parent=txn) as child:
                value = op.function(TxnWriter(self, child, partial, state, now_ms))
        except Exception as exc:  # reported to the caller; the other operations of the commit go on
            state.restore(before)
            result.failed.append((op.future, exc))
            return
        _merge(result, partial)
        result.done.append((op.future, value))

    def _make_room(self, txn: lmdb.Transaction, result: _Commit, stored: dict[DurableQueue, _Totals],
                   touched: set[DurableQueue], queue: DurableQueue, items: int, size: int, cost: int,
                   pages: int) -> int | None:
        """Bytes of pages freed so that one record fits (0 when it already does), or None to refuse it."""
        totals = stored[queue]
        over_capacity = queue.capacity.exceeded(totals.entries, totals.items, totals.bytes, items, size)
        over_budget = bool(self.limits.max_size) and pages + cost > self.limits.max_size
        if not over_capacity and not over_budget:
            return 0
        if self.limits.full_policy != "drop_oldest":
            return None
        freed = 0
        while queue.capacity.exceeded(totals.entries, totals.items, totals.bytes, items, size):
            released = self._evict(txn, result, stored, touched, 1, queue, "queue_full")
            if not released:
                return None
            freed += released
        if self.limits.max_size and pages - freed + cost > self.limits.max_size:
            need = pages - freed + cost - self.limits.max_size
            released = self._evict(txn, result, stored, touched, need, None, "disk_full")
            freed += released
            if released < need:
                return None
        return freed

    def _evict(self, txn: lmdb.Transaction, result: _Commit, stored: dict[DurableQueue, _Totals],
               touched: set[DurableQueue], need: int, only: DurableQueue | None, reason: str) -> int:
        """Delete unleased records from the head (oldest first across queues unless `only`); returns bytes freed."""
        freed = 0
        candidates = [only] if only is not None else list(self.queues.values())
        cursors = {queue: txn.cursor(db=queue.db) for queue in candidates}
        heads = {queue: cursor.first() for queue, cursor in cursors.items()}
        while freed < need:
            best, best_time = None, None
            for queue, cursor in cursors.items():
                while heads[queue] and _KEY.unpack(cursor.key())[0] in queue._leased:
                    heads[queue] = cursor.next()
                if heads[queue]:
                    enqueued = _enqueued_ms(cursor.value())
                    if best is None or enqueued < best_time:
                        best, best_time = queue, enqueued
            if best is None:
                break
            cursor = cursors[best]
            seq = _KEY.unpack(cursor.key())[0]
            value = bytes(cursor.value())
            txn.delete(cursor.key(), db=best.db)
            heads[best] = cursor.set_range(_KEY.pack(seq + 1))
            items = _items_of(value)
            _add(stored[best], result.delta(best), -1, -items, -len(value))
            result.drops.setdefault((best, reason), []).append(items)
            touched.add(best)
            freed += footprint(len(value), self.page_size)
        return freed

    def _expire(self, txn: lmdb.Transaction, result: _Commit, stored: dict[DurableQueue, _Totals],
                touched: set[DurableQueue], now_ms: int) -> None:
        """Drop records older than max_age (unleased ones; a leased record is being delivered)."""
        cutoff = now_ms - int(self.limits.max_age * 1000)
        for queue in self.queues.values():
            cursor = txn.cursor(db=queue.db)
            found = cursor.first()
            while found:
                value = cursor.value()
                if _enqueued_ms(value) >= cutoff:
                    break
                seq = _KEY.unpack(cursor.key())[0]
                if seq in queue._leased:
                    found = cursor.next()
                    continue
                items = _items_of(value)
                _add(stored[queue], result.delta(queue), -1, -items, -len(value))
                result.drops.setdefault((queue, "max_age"), []).append(items)
                touched.add(queue)
                found = cursor.delete()

    def _report(self, result: _Commit) -> None:
        self._loop.call_soon_threadsafe(self._resolve, result)

    def _resolve(self, result: _Commit) -> None:
        """Runs on the event loop: apply a commit's effect to in-memory state, then wake the waiters."""
        for queue, delta in result.deltas.items():
            queue._apply(delta, result.oldest.get(queue))
        for (queue, reason), items in result.drops.items():
            if self.on_drop is not None:
                self.on_drop(queue, reason, sum(items), len(items))
        self.deadletter_entries += result.dead_lettered
        for entry in result.done:
            future, value = entry if isinstance(entry, tuple) else (entry, None)
            if not future.done():
                future.set_result(value)
        for future, exc in result.failed:
            if not future.done():
                future.set_exception(exc)

    # ---- compaction ------------------------------------------------------------------------

    def compact_now(self) -> asyncio.Future:
        """Compact the live environment between two commits; resolves to (bytes before, bytes after)."""
        return self.call(self._compact_live)

    async def compact_on_rebound(self, needed_mib: int, trigger_mib: int, interval: float) -> None:
        """Run until cancelled: compact when the file grew large and the live data shrank (otelcol's on_rebound)."""
        while True:
            await asyncio.sleep(interval)
            if rebound_due(self.file_size(), self.live_bytes(), needed_mib, trigger_mib):
                try:
                    await self.compact_now()
                except Exception as exc:
                    log.error("queue compaction failed; continuing with the uncompacted file", exc_info=exc)

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
        self.compactions += 1
        log.info("queue compacted", extra={"directory": self.directory, "bytes_before": before, "bytes_after": after,
                                           "seconds": round(time.monotonic() - started, 3)})
        return before, after

    # ---- maintenance (run on the writer thread through `call`) ------------------------------

    def purge(self, queue: DurableQueue) -> asyncio.Future:
        """Delete every unleased record of a queue, counted as dropped (reason "purged")."""
        def seqs() -> list[int]:
            with self.env.begin(db=queue.db) as txn:
                return [_KEY.unpack(key)[0] for key, _ in txn.cursor() if _KEY.unpack(key)[0] not in queue._leased]

        async def run() -> int:
            targets = await self.call(seqs)
            await self._submit(lambda fut: _Delete(queue, targets, fut, reason="purged"))
            return len(targets)
        return asyncio.ensure_future(run())


    def dead_letters(self, limit: int = 0) -> list[deadletter.DeadLetter]:
        with self.gate.shared(), self.env.begin(db=self.deadletter_db) as txn:
            return deadletter.read(txn, self.deadletter_db, limit)

    def replay_dead_letters(self, seqs: list[int] | None = None) -> asyncio.Future:
        """Move dead letters (all when `seqs` is None) to the tail of their queues, to be sent again."""
        return self.call(lambda: self._replay(seqs))

    def purge_dead_letters(self, seqs: list[int] | None = None) -> asyncio.Future:
        return self.call(lambda: self._purge_dead(seqs))

    def _replay(self, seqs: list[int] | None) -> int:
        result = _Commit()
        moved = 0
        with self.env.begin(write=True) as txn:
            for letter in deadletter.take(txn, self.deadletter_db, seqs):
                queue = self.queues.get(letter.description.get("queue", ""))
                if queue is None:  # its exporter is gone from the config: keep it
                    deadletter.put(txn, self.deadletter_db, letter.description, letter.value,
                                   letter.description.get("time_ms", 0))
                    continue
                value = record.with_attempts(letter.value, 0)
                txn.put(_KEY.pack(queue.next_seq), value, db=queue.db, append=True)
                queue.next_seq += 1
                items = _items_of(value)
                _add(queue.stored, result.delta(queue), 1, items, len(value))
                txn.put(queue._stats_key(), _STATS.pack(queue.stored.items, queue.stored.bytes), db=self.meta_db)
                moved += 1
            remaining = txn.stat(self.deadletter_db)["entries"]
            self.pages_in_use = self._measure_pages(txn)
        self._loop.call_soon_threadsafe(self._set_dead_letters, remaining, result)
        return moved

    def _purge_dead(self, seqs: list[int] | None) -> int:
        with self.env.begin(write=True) as txn:
            taken = deadletter.take(txn, self.deadletter_db, seqs)
            remaining = txn.stat(self.deadletter_db)["entries"]
            self.pages_in_use = self._measure_pages(txn)
        self._loop.call_soon_threadsafe(self._set_dead_letters, remaining, _Commit())
        return len(taken)

    def _set_dead_letters(self, remaining: int, result: _Commit) -> None:
        self.deadletter_entries = remaining
        self._resolve(result)


def _verify(env: lmdb.Environment, data_path: str) -> None:
    """Fail now, not later in a consumer, on a truncated file or a broken B-tree.

    A file shorter than its last page would make reading that page crash the process (the map
    points past the end of the file). Walking every key of every sub-database reads the
    branch and leaf pages but not the values' overflow pages, so a large backlog opens fast."""
    info = env.info()
    page_size = env.stat()["psize"]
    if os.path.getsize(data_path) < (info["last_pgno"] + 1) * page_size:
        raise CorruptRecordError(f"data file is shorter than its {info['last_pgno'] + 1} pages: truncated")
    with env.begin() as txn:
        names = [name for name, _ in txn.cursor()]
        for name in names:
            sub = env.open_db(name, txn=txn, create=False)
            for _ in txn.cursor(db=sub).iternext(keys=True, values=False):
                pass


def _add(totals: _Totals, delta: _Totals, entries: int, items: int, size: int) -> None:
    totals.entries += entries
    totals.items += items
    totals.bytes += size
    delta.entries += entries
    delta.items += items
    delta.bytes += size


@dataclass
class _TxnState:
    """The writer's running totals inside one transaction."""

    stored: dict[DurableQueue, _Totals]
    pages: int
    touched: set[DurableQueue] = field(default_factory=set)
    next_seqs: dict[DurableQueue, int] = field(default_factory=dict)

    def copy(self) -> "_TxnState":
        return _TxnState({q: _Totals(t.entries, t.items, t.bytes) for q, t in self.stored.items()}, self.pages,
                         set(self.touched), dict(self.next_seqs))

    def restore(self, other: "_TxnState") -> None:
        self.stored, self.pages, self.touched, self.next_seqs = other.stored, other.pages, other.touched, other.next_seqs


class TxnWriter:
    """What an atomic operation may do inside the writer's transaction (see `QueueStore.atomic`)."""

    def __init__(self, store: QueueStore, txn: lmdb.Transaction, result: _Commit, state: _TxnState, now_ms: int):
        self.store = store
        self.txn = txn
        self.now_ms = now_ms
        self._result = result
        self._state = state

    def encode(self, signal: Signal, body: bytes, items: int, batch_key: bytes = b"", compress: bool = True) -> bytes:
        compressor = self.store._compressor if compress else None
        return record.encode(signal, items, self.now_ms, body, compressor, batch_key=batch_key)

    def append(self, queue: DurableQueue, body: bytes, items: int, batch_key: bytes = b"") -> None:
        """Append a request to an export queue, as a put would; QueueFullError when it does not fit."""
        value = self.encode(queue.signal, body, items, batch_key)
        if not self.store._append(self.txn, self._result, self._state, queue, value, items):
            raise QueueFullError(f"queue {queue.name} is full; retry later", retry_after=5.0)

    def put(self, db: Any, key: bytes, value: bytes) -> None:
        """Store a value in a stage's own sub-database, within the disk budget."""
        cost = footprint(len(value), self.store.page_size)
        limit = self.store.limits.max_size
        if limit and self._state.pages + cost > limit:
            self.store.full = True
            raise QueueFullError(f"queue storage in {self.store.directory} is at its size limit; retry later",
                                 retry_after=5.0)
        self.txn.put(key, value, db=db)
        self._state.pages += cost

    def pop(self, db: Any, key: bytes) -> bytes | None:
        value = self.txn.pop(key, db=db)
        if value is not None:
            self._state.pages -= footprint(len(value), self.store.page_size)
        return value


def _merge(into: _Commit, other: _Commit) -> None:
    for queue, delta in other.deltas.items():
        mine = into.delta(queue)
        mine.entries += delta.entries
        mine.items += delta.items
        mine.bytes += delta.bytes
    into.oldest.update(other.oldest)
    into.done += other.done
    into.failed += other.failed
    for key, items in other.drops.items():
        into.drops.setdefault(key, []).extend(items)
    into.dead_lettered += other.dead_lettered


def _items_of(value: bytes) -> int:
    try:
        return record.decode_header(value).items
    except CorruptRecordError:
        return 0


def _out_of_space(exc: Exception, directory: str, need: int) -> bool:
    """A full map, ENOSPC, or an I/O error while the filesystem has no room left.

    LMDB reports a short write as EIO, which is what a full tmpfs or flash card produces."""
    if isinstance(exc, lmdb.MapFullError):
        return True
    text = str(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text or "MDB_MAP_FULL" in text:
        return True
    if "Input/output error" in text or getattr(exc, "errno", None) == errno.EIO:
        try:
            stat = os.statvfs(directory)
        except OSError:
            return False
        return stat.f_bavail * stat.f_frsize < max(need, 1) + (1 << 20)
    return False


def _scan_totals(txn: lmdb.Transaction, db: Any) -> tuple[int, int]:
    items = size = 0
    for _, value in txn.cursor(db=db):
        size += len(value)
        items += _items_of(value)
    return items, size


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
