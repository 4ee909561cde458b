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
    each commit. The writer learns which records are leased only from the immutable snapshot
    each queue publishes (reader.py), never from the loop's own lease state.
  * A live compaction closes and reopens the environment between two commits, with `gate`
    held exclusively. Sub-database handles are therefore looked up inside the gate
    (`reading(table)`) or on the writer thread, never carried across it; new queues and
    tables open theirs under `_handles`, which the swap holds too. A swap that fails reopens
    whichever file is then data.mdb (compaction.py); one that does not open yet is tried
    again by the writer at each pass, and requests are refused as retryable meanwhile.
    compaction::on_start is the writer's first work; a close (or `stop_compaction`) gives up
    a compaction under way, so a stop never waits for the copy of a large queue.
  * Modules: store.py (this: queues, writer thread, commits), home.py (the environment
    opened, salvaged, reopened after a swap, measured, closed), grouping.py (what one
    commit takes and how long it waits for more), arrivals.py (the requests on their way to
    the writer, which tell group commit whether to wait), ops.py (the writer's
    operations, each applying itself to the transaction), eviction.py (full policy, max_age),
    reader.py (leases and the byte-level read API), environment.py (files, lock, modes),
    salvage.py (reading a damaged data file page by page), clocksteps.py (ages a step of the
    wall clock does not falsify), api.py (the Protocols the sender and the tail-sampling stage
    depend on).

Key layout
  * `q:<queue name>`  key: 8-byte big-endian sequence; value: a record (record.py): a
    header (format version, signal, codec, flags, item count, enqueue time in unix ms,
    attempts, optional batch key) followed by the zstd-compressed export request.
  * `meta`            key: `stats:<queue name>`; value: total items and bytes of that queue,
    written in the same transaction as the records they count, so they are always exact
    and opening a large backlog needs no scan. Key `clock:<queue name>`: the forward steps of
    the wall clock that records of that queue were stamped before (clocksteps.py), written in
    the commit that noticed the step. Key `unset-clock`: records were stamped by a clock that
    was not set, and not yet shifted (clocksteps.py).
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
  * A data file that LMDB cannot open is moved aside with a timestamp, every intact record
    that can still be read from it is salvaged into the fresh queue (counted, with what was
    lost), and the queue goes on. A file we may not read or write (wrong owner), or one whose
    map does not fit in memory or that finds no descriptor, is never taken for corruption: the
    agent refuses to start, and the file stays where it is.
  * A filesystem that refuses writes other than for room (read-only, I/O errors, quota) fails
    every commit with a retryable StorageUnwritableError: puts are refused, and a delivered
    record's delete waits (the record stays out of every lease) until the writer finds the
    filesystem writable again, at most every WRITE_RETRY_INTERVAL and never while it is mounted
    read-only; a directory mounted again in its place is opened there (home.py).
  * A record that does not decode is quarantined: moved to the dead-letter store with reason
    `corrupt`, counted, logged once with its key; the records after it keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue as thread_queue
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import lmdb
import zstandard

from edgeagent.errors import QueueFullError, ShutdownError
from edgeagent.futures import settle
from edgeagent.queue import clocksteps, compaction, damage, environment, reader, record
from edgeagent.queue.api import Corrupt, StageTransaction, StoredRecord, T
from edgeagent.queue.arrivals import Arrival, Handover
from edgeagent.queue.clocksteps import Clock, Shifts, StepWatch, SystemClock
from edgeagent.queue.compaction import CompactionStopped, copy_compacted, rebound_due
from edgeagent.queue.environment import StorageAccessError, StorageLockedError
from edgeagent.queue.eviction import evict, evict_dead_letters, expire, make_room, stage_room
from edgeagent.queue.grouping import Grouping
from edgeagent.queue.home import REOPEN_INTERVAL, StoreHome
from edgeagent.queue.limits import QueueCapacity, StorageLimits, footprint
from edgeagent.queue.ops import (
    KEY,
    STATS,
    Atomic,
    Call,
    Commit,
    Context,
    Put,
    StoreTable,
    Totals,
    TxnState,
    WriterOp,
    WriterQueue,
    append,
    enqueued_ms,
)
from edgeagent.queue.reader import DurableQueue, Lease, Table
from edgeagent.queue.watch import Room
from edgeagent.runtime import supervise
from edgeagent.signals import Signal

__all__ = ["DEFAULT_MAP_SIZE", "DurableQueue", "Lease", "QueueStore", "StorageAccessError", "StorageLockedError",
           "Table"]

log = logging.getLogger(__name__)

_SWEEP_INTERVAL = 1.0  # seconds between max_age sweeps
_UNSET_NOTE = b"unset-clock"  # meta key: records were stamped by a clock that was not set (clocksteps.py)
# LMDB reserves address space, not disk: the file grows only as pages are used.
DEFAULT_MAP_SIZE = (64 << 30) if sys.maxsize > 2**32 else (1 << 30)

DropCallback = Callable[[WriterQueue, str, int, int], None]  # queue, reason, items, records


class QueueStore(StoreHome):
    """One LMDB environment (a `StoreHome`: home.py) with its writer thread; hands out `DurableQueue`s
    by name (the `StageStore` of api.py for the tail-sampling stage)."""

    def __init__(self, directory: str, *, sync: bool = True, map_size: int = DEFAULT_MAP_SIZE,
                 limits: StorageLimits = StorageLimits(), compression_level: int = 1, lock_timeout: float = 1.0,
                 compact_on_start: bool = False, compaction_scratch: str | None = None,
                 on_corrupt: Callable[[str], None] | None = None, on_drop: DropCallback | None = None,
                 on_quarantine: Callable[[StoreTable, int], None] | None = None,
                 on_salvage: Callable[[int, int], None] | None = None, control_socket: str | None = None,
                 read_only: bool = False, directory_mode: int | None = None, recreate: bool = True,
                 clock: Clock | None = None, on_damaged: Callable[[str], None] | None = None):
        super().__init__(directory, sync=sync, map_size=limits.map_size(map_size), lock_timeout=lock_timeout,
                         on_corrupt=on_corrupt, on_salvage=on_salvage, control_socket=control_socket,
                         read_only=read_only, directory_mode=directory_mode, recreate=recreate,
                         on_damaged=None if on_damaged is None else self._on_loop(on_damaged))
        self.limits = limits
        self.clock = clock or SystemClock()  # what records are stamped and aged by (clocksteps.py)
        self._steps = StepWatch(self.clock)  # the writer's readings of it
        self._unsaved_shifts: set[WriterQueue] = set()  # queues whose clock shifts the next commit writes
        self._clock_set = False  # the wall clock read as set (clocksteps.UNSET_BEFORE_MS) at the last commit
        self._unset_note: bool | None = None  # the next commit writes (True) or deletes (False) the note
        self._unset_noted = False  # the note is on disk, as this process last wrote or read it
        self.compression_level = compression_level
        self.on_drop = on_drop
        self.on_quarantine = on_quarantine  # (queue or table, records)
        self.compact_on_start = compact_on_start
        self.compaction_scratch = compaction_scratch
        self.compactions = 0
        self.compaction_failures = 0
        self._compaction_failing = False  # the last compaction failed
        self._stop_compaction = threading.Event()  # set: a compaction under way gives up (a stop is coming)
        self._on_start: asyncio.Future[None] | None = None  # compaction::on_start, the writer's first work
        self.writer_errors = 0  # commits that failed unexpectedly (the writer went on)
        self._failing = False  # the last commit failed unexpectedly: the next failure is not logged again
        self.full = False  # the last put was refused for lack of room
        self._grouping = Grouping()  # what one commit takes, and how long it waits for more
        self._ops = self._grouping.ops
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._last_sweep = 0.0
        self.room = Room()  # commits that freed room, for clients waiting for it (block_on_overflow)
        self.arrivals = self._grouping.arrivals  # requests on their way to a put (arrivals.py)
        self._handover = Handover(self._ops.put, self.arrivals)  # puts, once per pass of the loop
        self.writer_compressor: zstandard.ZstdCompressor | None = None  # the writer thread's
        self._loop_compressor = record.compressor(compression_level)  # the event loop's

    def _on_loop(self, callback: Callable[[str], None]) -> Callable[[str], None]:
        """`callback`, called from any thread, run on the store's event loop (once started)."""
        def call(message: str) -> None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(callback, message)
        return call

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop that started the writer (start())."""
        if self._loop is None:
            raise RuntimeError(f"queue storage in {self.directory} was not started")
        return self._loop

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        self._stop_compaction.clear()  # a stop given to the store before it was opened again is spent
        super().open()

    def queue(self, name: str, signal: Signal, capacity: QueueCapacity = QueueCapacity()) -> DurableQueue:
        if name not in self.queues:
            with self._handles:  # a reload adds queues on the loop, maybe while a compaction swaps the environment
                self.queues[name] = DurableQueue(self, name, signal, capacity)
        return self.queues[name]

    def table(self, name: str) -> Table:
        """A stage's own sub-database of records, kept next to the queues (written only in `atomic`)."""
        if name not in self.tables:
            with self._handles:
                self.tables[name] = Table(name, self.sub_database(name.encode()))
        return self.tables[name]

    def start(self) -> None:
        """Start the writer thread; call from the event loop that will await puts. With compact_on_start
        the writer compacts first (`compacted()` waits for it), off the loop, so a stop need not wait."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        writer = threading.Thread(target=self._write_loop, name=f"lmdb-writer:{self.directory}", daemon=True)
        writer.start()  # RuntimeError with no thread to be had (a pids limit): close() then joins none
        self._writer = writer
        if self.compact_on_start:
            self._on_start = self.call(self._compact_on_start)

    async def compacted(self) -> None:
        """Until compaction::on_start has ended: done, failed (the queue goes on with its file) or given up."""
        if self._on_start is not None:
            await self._on_start

    def stop_compaction(self) -> None:
        """A stop is coming: compactions give up (compaction.py), until the store is opened again."""
        self._stop_compaction.set()

    async def close(self) -> None:
        """Finish every pending commit, stop the writer and close the environment. Idempotent."""
        self.stop_compaction()
        if self._writer is not None:
            self._closing = True
            self.room.close()
            self._handover.flush()
            self._ops.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        self._wake_writable_waiters(False)
        await asyncio.to_thread(self._release)  # waits for reads under way

    # ---- sizes -------------------------------------------------------------------------------

    def live_bytes(self) -> int:
        return sum(queue.bytes for queue in self.queues.values())

    # ---- reads (worker threads) ------------------------------------------------------------

    def scan(self, table: Table, bodies: bool = False) -> Iterator[StoredRecord | Corrupt]:
        return reader.scan_table(self, table, bodies)

    def read_records(self, table: Table, keys: list[bytes]) -> tuple[dict[bytes, StoredRecord], list[Corrupt]]:
        return reader.read_records(self, table, keys)


    # ---- writes ----------------------------------------------------------------------------

    async def put(self, targets: list[DurableQueue], body: bytes, items: int, signal: Signal,
                  batch_key: bytes = b"", attributes: bytes = b"", arrival: Arrival | None = None) -> None:
        """Append one request to every queue in `targets` in a single commit; returns once durable.

        `batch_key` (the batch processor's metadata_keys values) keeps records with different keys
        out of one upstream request. `attributes` (a serialized KeyValueList) are added to every
        span, log record or data point when the record is read. `arrival` is the request's count in
        `arrivals`, ended once its records are queued. Raises QueueFullError (retryable) when there
        is no room."""
        await asyncio.gather(*self.put_each(targets, body, items, signal, batch_key, attributes, arrival=arrival))

    def put_each(self, targets: list[DurableQueue], body: bytes, items: int, signal: Signal, batch_key: bytes = b"",
                 attributes: bytes = b"", outcomes: dict[DurableQueue, asyncio.Future[None]] | None = None,
                 blocking: Collection[DurableQueue] = (), arrival: Arrival | None = None) -> list[asyncio.Future[Any]]:
        """`put`, with a future per target: each resolves once its record is durable, or fails alone
        (QueueFullError for a full queue). A target in `outcomes` has its future settled with the
        record's delivery (wait_for_result; watch.py); one in `blocking` (block_on_overflow) is not
        counted as refused when full: the caller tries again, and counts the final refusal."""
        if self._closing or self._writer is None:
            raise ShutdownError("the queue is closing")
        payload = self._loop_compressor.compress(body)
        ops: list[WriterOp] = []
        for target in targets:
            outcome = outcomes.get(target) if outcomes else None
            ops.append(Put(target, payload, items, signal, self.loop.create_future(), batch_key, attributes, outcome,
                           target in blocking))
        self._handover.put(self.loop, ops, arrival)
        return [op.future for op in ops]

    def end_waits(self, error: BaseException) -> None:
        """The agent stops: clients waiting for a delivery get `error` (their records stay queued),
        and clients waiting for room a ShutdownError."""
        for queue in self.queues.values():
            queue.end_watches(error)
        self.room.close()

    def atomic(self, function: Callable[[StageTransaction], T]) -> asyncio.Future[T]:
        """Run `function(writer)` on the writer thread inside the next commit, all or nothing;
        the future resolves to its result once that commit is durable."""
        return self.submit(lambda fut: Atomic(function, fut))

    def submit(self, make_op: Callable[[asyncio.Future[Any]], WriterOp]) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        if self._writer is None:
            future.set_exception(ShutdownError("the queue is closed"))
            return future
        self._ops.put(make_op(future))
        return future

    def call(self, function: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `function` on the writer thread, between two commits."""
        return self.submit(lambda fut: Call(function, fut))

    def _write_loop(self) -> None:
        self.writer_compressor = record.compressor(self.compression_level)  # for atomic operations
        stopping = False
        while not stopping:
            ops, stopping = self._next_ops()
            calls = [op for op in ops if isinstance(op, Call)]  # the only between_commits operation
            self._write_pass([op for op in ops if not op.between_commits])
            for op in calls:
                self._run_call(op)

    def _next_ops(self) -> tuple[list[WriterOp], bool]:
        """The operations of the next pass (waiting at most until something is due), and whether the
        stop marker came: what is queued behind it is still taken."""
        wait = REOPEN_INTERVAL if self._unopened is not None or self.unwritable else \
            _SWEEP_INTERVAL if self.limits.max_age else None
        try:
            ops = [self._ops.get(timeout=wait)]
        except thread_queue.Empty:
            ops = []
        self._grouping.gather(ops)
        stopping = None in ops
        while stopping:
            try:
                ops.append(self._ops.get_nowait())
            except thread_queue.Empty:
                break
        return [op for op in ops if op is not None], stopping

    def _write_pass(self, writes: list[WriterOp]) -> None:
        """Commit `writes` (and a max_age sweep when due), or refuse them at once while the environment
        is not open or its filesystem refuses writes; reopen or probe first when that is due."""
        sweep = bool(self.limits.max_age) and time.monotonic() - self._last_sweep >= _SWEEP_INTERVAL
        if self.unwritable and self._unopened is None and self._write_due() and self._files_elsewhere():
            self._reopen_elsewhere()
        elif self._unopened is not None:  # each pass tries again, at least every REOPEN_INTERVAL
            self._reopen_after_failed_swap()
        if self._unopened is not None:
            self._report(Commit(failed=[(op.future, self._unavailable()) for op in writes]))
        elif not self._write_due():  # refused at once: no write is tried on a filesystem that refuses them
            self._report(Commit(failed=[(op.future, self._unwritable_error()) for op in writes]))
        elif self.unwritable and not writes:
            if self._probe():
                self._writable_again()
        elif writes or sweep:
            try:
                self._commit(writes, sweep)
            except Exception as exc:  # noqa: BLE001 - the writer goes on; its clients hear of the error
                self._failed_commit(writes, exc)
            else:
                self._failing = False

    def _failed_commit(self, ops: list[WriterOp], error: Exception) -> None:
        """A commit that raised other than LMDB's errors (a bug, a record the header cannot hold):
        its operations fail (a client sends again: at worst a duplicate) and the next commit starts
        afresh. Logged once until a commit succeeds, counted each time."""
        self.writer_errors += 1
        if not self._failing:
            log.error("queue writer failed a commit unexpectedly; its requests fail and the writer goes on",
                      exc_info=error, extra={"directory": self.directory, "operations": len(ops)})
        self._failing = True
        self._report(Commit(failed=[(op.future, error) for op in ops]))

    def _run_call(self, op: Call) -> None:
        try:
            result = op.function()
        except Exception as exc:  # reported to the caller, who logs it
            self.loop.call_soon_threadsafe(settle, op.future, None, exc)
        else:
            self.loop.call_soon_threadsafe(settle, op.future, result, None)

    def _commit(self, ops: list[WriterOp], sweep: bool = False) -> None:
        now_ms, step_ms = self._steps.read()
        self._clock_read(now_ms, step_ms, bool(ops))
        for op in ops:
            op.prepare(now_ms)
        try:
            result = self._transaction(ops, now_ms, sweep)
        except lmdb.Error as exc:
            if damage.is_damage(exc):
                refused = self.damaged(exc)
                self._report(Commit(failed=[(op.future, refused) for op in ops]))
                return
            need = sum(footprint(op.put_bytes, self.page_size) for op in ops)
            reason = None if environment.out_of_space(exc, self.directory, need) else environment.unwritable(exc)
            if reason is not None:
                self._report(self._commit_refused(ops, exc, reason))
                return
            if not environment.out_of_space(exc, self.directory, need):
                log.exception("queue commit failed in %s", self.directory)
                self._report(Commit(failed=[(op.future, exc) for op in ops]))
                return
            result = self._commit_when_out_of_space(ops, now_ms, exc)
        else:
            if self.unwritable:
                self._writable_again()
            if not self.full and not os.path.exists(environment.ballast_path(self.directory)):
                environment.ensure_ballast(self.directory)  # room came back: rebuild the reserve
        self._report(result)

    def _clock_read(self, now_ms: int, step_ms: int, stamps: bool) -> None:
        """Before a commit stamps and ages with `now_ms`: shift what a forward step made too old, and
        what an earlier process stamped with a clock that was not set once the clock is set
        (clocksteps.py). While the clock is not set, the note `unset-clock` in the meta sub-database
        says that records were stamped so, for a process that starts with the clock set."""
        clock_set = now_ms >= clocksteps.UNSET_BEFORE_MS
        if step_ms:
            log.warning("the wall clock stepped forward; records queued before the step keep their true age",
                        extra={"directory": self.directory, "step_seconds": step_ms / 1000})
            self._shift(step_ms, now_ms)
        elif clock_set and not self._clock_set and self._unset_noted_on_disk():
            self._shift(0, now_ms)
        if clock_set and not self._clock_set and (step_ms or self._unset_noted):
            self._unset_note = False  # every record stamped unset is shifted now
        elif not clock_set and stamps and not self._unset_noted:
            self._unset_note = True
        self._clock_set = clock_set

    def _unset_noted_on_disk(self) -> bool:
        with self.lmdb_env.begin() as txn:
            self._unset_noted = txn.get(_UNSET_NOTE, db=self.meta_db) is not None
        return self._unset_noted

    def _shift(self, step_ms: int, now_ms: int) -> None:
        """The records this process stamped so far are `step_ms` too old, and so are an earlier one's
        stamped by a clock that was not set (with no step: as old as when found). Their shifts are
        written by the next commit."""
        with self.lmdb_env.begin() as txn:
            for queue in self.queues.values():
                shifts = clocksteps.added(queue.shifts, queue.stamped_from, queue.next_seq, step_ms)
                earlier = _stamps(txn.cursor(db=queue.db), queue.stamped_from)
                shifts = clocksteps.earlier_unset(earlier, shifts, step_ms or now_ms, now_ms)
                if shifts != queue.shifts:
                    queue.shifts = shifts
                    self._unsaved_shifts.add(queue)

    def _commit_refused(self, ops: list[WriterOp], exc: Exception, reason: str) -> Commit:
        """The filesystem refuses writes (read-only, I/O errors, quota): every operation fails with a
        retryable refusal, counted as a full disk's are; no write is tried again for a while."""
        refused = self._refused_writes(exc, reason)
        for op in ops:
            if isinstance(op, Put) and not op.blocks:
                op.queue.refused_items += op.items
        return Commit(failed=[(op.future, refused) for op in ops])

    def _writable_again(self) -> None:
        """On the writer: a commit went through after the filesystem refused writes."""
        log.info("queue storage takes writes again", extra={"directory": self.directory,
                                                             "was": self.unwritable})
        self.unwritable, self.unwritable_problem = None, ""
        self.loop.call_soon_threadsafe(self._wake_writable_waiters, True)

    def _commit_when_out_of_space(self, ops: list[WriterOp], now_ms: int, exc: Exception) -> Commit:
        """The map or the filesystem is full: keep the deletes, then refuse or make room for the puts."""
        puts = [op for op in ops if op.put_bytes]
        others = [op for op in ops if not op.put_bytes]
        result = Commit()
        # Deletes need free pages too (LMDB copies on write): the ballast's room lets them through.
        # Kept while puts are only refused, so the acks that will free the space still find it.
        # Dead letters give way under either policy, as at the disk budget (eviction.py); the
        # count is the event loop's, read here as a hint: a miss waits for the next full commit.
        evicts = bool(puts) and (self.limits.full_policy == "drop_oldest" or self.deadletter_entries > 0)
        if (others or evicts) and environment.drop_ballast(self.directory):
            log.warning("queue storage is out of space; released the reserve so that deletes can proceed",
                        extra={"directory": self.directory})
        if others:
            try:
                result = self._transaction(others, now_ms)
            except lmdb.Error as retry_exc:
                log.error("queue storage in %s is out of space; even deletes fail: %s", self.directory, retry_exc)
                result.failed += [(op.future, retry_exc) for op in others]
        if evicts:
            try:
                need = sum(footprint(op.put_bytes, self.page_size) for op in puts) * 4 + (1 << 20)
                result.merge(self._transaction([], now_ms, evict_bytes=need))
                result.merge(self._transaction(puts, now_ms))
                return result
            except lmdb.Error:
                pass
        self.full = True
        full = QueueFullError(f"queue storage in {self.directory} is out of space ({exc})", retry_after=5.0)
        result.failed += [(op.future, full) for op in puts]
        for op in puts:  # failed enqueues, as a queue at its queue_size counts them (Put.apply)
            if isinstance(op, Put) and not op.blocks:
                op.queue.refused_items += op.items
        return result

    def _transaction(self, ops: list[WriterOp], now_ms: int, sweep: bool = False, evict_bytes: int = 0) -> Commit:
        result = Commit()
        state = TxnState(stored={queue: Totals(queue.stored.entries, queue.stored.items, queue.stored.bytes)
                                 for queue in self.queues.values()}, pages=self.pages_in_use)
        state.touched.update(self._unsaved_shifts)  # their oldest age changed, and their shifts are written
        kept: dict[WriterQueue, Shifts] = {}
        with self.lmdb_env.begin(write=True) as txn:
            ctx = Context(self, txn, result, state, now_ms)
            if evict_bytes:
                freed = evict_dead_letters(ctx, evict_bytes)
                if freed < evict_bytes and self.limits.full_policy == "drop_oldest":
                    freed += evict(ctx, evict_bytes - freed, None, "disk_full")
                state.pages -= freed
            for op in ops:
                op.apply(ctx)
            if sweep:
                expire(ctx)
            if self._unset_note is not None:
                if self._unset_note:
                    txn.put(_UNSET_NOTE, b"", db=self.meta_db)
                else:
                    txn.delete(_UNSET_NOTE, db=self.meta_db)
            for queue in state.touched:
                totals = state.stored[queue]
                txn.put(queue.stats_key(), STATS.pack(max(totals.items, 0), max(totals.bytes, 0)), db=self.meta_db)
                cursor = txn.cursor(db=queue.db)
                head = KEY.unpack(cursor.key())[0] if cursor.first() else None
                kept[queue] = self._keep_shifts(txn, queue, head)
                result.delta(queue)  # the loop takes the oldest age even when no total moved
                result.oldest[queue] = 0 if head is None else \
                    enqueued_ms(cursor.value()) + clocksteps.shift_of(kept[queue], head)
            measured = self.measure_pages(txn)
        # committed: the writer's state moves forward
        for queue, items in result.refused.items():
            queue.refused_items += items
        for queue in state.touched:
            queue.stored = state.stored[queue]
        for queue, seq in state.next_seqs.items():
            queue.next_seq = seq
        for queue, shifts in kept.items():
            queue.shifts = shifts
        self._unsaved_shifts.clear()
        if self._unset_note is not None:
            self._unset_noted, self._unset_note = self._unset_note, None
        self.pages_in_use = measured
        if sweep:
            self._last_sweep = time.monotonic()
        return result

    def _keep_shifts(self, txn: lmdb.Transaction[bytes], queue: WriterQueue, head: int | None) -> Shifts:
        """The clock shifts of `queue` that still cover a record, its first being `head`, written to
        the meta sub-database when they changed."""
        shifts = clocksteps.pruned(queue.shifts, head)
        if shifts != queue.shifts or queue in self._unsaved_shifts:
            if shifts:
                txn.put(queue.clock_key(), clocksteps.pack(shifts), db=self.meta_db)
            else:
                txn.delete(queue.clock_key(), db=self.meta_db)
        return shifts

    def append_record(self, ctx: Context, queue: WriterQueue, value: bytes, items: int) -> bool:
        """Append one encoded record to `queue`, making room by the full policy; False when it does not fit."""
        state = ctx.state
        state.touched.add(queue)
        cost = footprint(len(value), self.page_size)
        room = make_room(ctx, queue, items, len(value), cost)
        if room is None:
            self.full = True
            return False
        seq = state.next_seqs.get(queue, queue.next_seq)
        append(ctx.txn, queue, seq, value)
        state.next_seqs[queue] = seq + 1
        state.stored[queue].add(ctx.result.delta(queue), 1, items, len(value))
        state.pages += cost - room
        self.full = False
        return True

    def free_for_stage(self, ctx: Context, cost: int) -> bool:
        """Room in the disk budget for a stage's record (eviction.stage_room)."""
        return stage_room(ctx, cost)

    def _report(self, result: Commit) -> None:
        self.loop.call_soon_threadsafe(self.resolve, result)

    def resolve(self, result: Commit) -> None:
        """Runs on the event loop: apply a commit's effect to in-memory state, then wake the waiters.

        Watched records are registered first, before any consumer hears of them (watch.py)."""
        for watched_queue, seq, outcome in result.watched:
            watched_queue.watch(seq, outcome)
        for queue, delta in result.deltas.items():
            queue.apply(delta, result.oldest.get(queue))
        if any(delta.entries < 0 for delta in result.deltas.values()):
            self.room.freed_now()
        for (queue, reason), items in result.drops.items():
            if self.on_drop is not None:
                self.on_drop(queue, reason, sum(items), len(items))
        for (queue, reason), seqs in result.dropped.items():
            queue.dropped(seqs, reason)
        for source, count in result.quarantined.items():
            if self.on_quarantine is not None:
                self.on_quarantine(source, count)
        self.deadletter_entries += result.dead_lettered
        for future, value in result.done:
            if not future.done():
                future.set_result(value)
        for future, exc in result.failed:
            if not future.done():
                future.set_exception(exc)

    # ---- compaction ------------------------------------------------------------------------

    def compact_now(self) -> asyncio.Future[Any]:
        """Compact the live environment between two commits; resolves to (bytes before, bytes after)."""
        return self.call(self._compact_live)

    async def compact_on_rebound(self, needed_mib: int, trigger_mib: int, interval: float,
                                 counting: supervise.Counting | None = None) -> None:
        """Run until cancelled: compact when the file grew large and the live data shrank (otelcol's
        on_rebound). A compaction that fails leaves the uncompacted file in use, and is tried again."""
        async def step() -> None:
            if rebound_due(self.file_size(), self.live_bytes(), needed_mib, trigger_mib):
                with contextlib.suppress(CompactionStopped):  # the agent is stopping
                    await self.compact_now()

        await supervise.every(interval, step, f"compaction:{self.directory}", {"directory": self.directory}, counting)

    def _compact_on_start(self) -> None:
        try:
            self._compact_live()
        except CompactionStopped:
            log.info("queue compaction given up for a stop; the queue keeps its file as it was",
                     extra={"directory": self.directory})
        except Exception as exc:  # noqa: BLE001 - the queue goes on with the file in place
            log.error("queue compaction failed; continuing with the uncompacted file", exc_info=exc,
                      extra={"directory": self.directory})

    def _compact_live(self) -> tuple[int, int]:
        """Runs on the writer thread: no commit is in progress, and the gate keeps readers out during the swap.

        A failure leaves the queue open on the file in place (the old one before the rename, the
        compacted one after it) and is counted and raised for the caller to log; so is a stop
        (CompactionStopped), not counted."""
        before = self.file_size()
        started = time.monotonic()
        # said once: a compaction that keeps failing (no descriptor left for its copy) is tried at each interval
        log.log(logging.DEBUG if self._compaction_failing else logging.INFO, "compacting the queue",
                extra={"directory": self.directory, "bytes_before": before})
        try:
            staged = copy_compacted(self.lmdb_env, self.directory, self.compaction_scratch, self._stop_compaction)
            with self.gate.exclusive(), self._handles:  # no reader, and no queue or table opening a handle
                compaction.swap_live(staged, self.directory, self._drop_env, self._reopen)
        except CompactionStopped:
            raise
        except Exception as exc:
            self.compaction_failures += 1
            self._compaction_failing = True
            if damage.is_damage(exc):  # its copy read every page, and met one damaged: as a commit that meets it
                raise self.damaged(exc) from exc
            raise
        self._compaction_failing = False
        after = self.file_size()
        self.compactions += 1
        log.info("queue compacted", extra={"directory": self.directory, "bytes_before": before, "bytes_after": after,
                                           "seconds": round(time.monotonic() - started, 3)})
        return before, after


def _stamps(cursor: lmdb.Cursor[bytes], end: int) -> Iterator[tuple[int, int]]:
    """(seq, enqueued ms) of a queue's records before seq `end`, in key order."""
    for key, value in cursor:
        seq = KEY.unpack(key)[0]
        if seq >= end:
            return
        yield seq, record.stamp(value)  # the header alone: a step may scan a large backlog

