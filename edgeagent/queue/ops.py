"""Writer operations: what the event loop asks of the writer thread (see the note in store.py).

Each operation applies itself to the open write transaction (`apply`), so the writer
dispatches by method, and says how it takes part in group commit by its attributes:
`client_waits` (a put or an atomic move: commit soon), `lingers` (a plain ack: may wait for
company), `between_commits` (runs outside any transaction: compaction, maintenance).
Everything here runs on the writer thread except the constructors.

The operations name what they use of a queue and of the store as Protocols (`WriterQueue`,
`WriterStore`), so this module and eviction.py sit below reader.py and store.py.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import lmdb
import zstandard

from edgeagent.errors import CorruptRecordError, QueueFullError, RetryableError, TooLargeForQueueError
from edgeagent.queue import deadletter, record
from edgeagent.queue.clocksteps import Shifts
from edgeagent.queue.limits import QueueCapacity, StorageLimits, footprint
from edgeagent.signals import Signal

KEY = struct.Struct(">Q")
STATS = struct.Struct(">QQ")


@dataclass
class Totals:
    """A queue's entries, items and bytes."""

    entries: int = 0
    items: int = 0
    bytes: int = 0

    def add(self, delta: Totals, entries: int, items: int, size: int) -> None:
        """Move these totals and the commit's `delta` by the same amounts."""
        for totals in (self, delta):
            totals.entries += entries
            totals.items += items
            totals.bytes += size


class StoreTable(Protocol):
    """A sub-database of queue records: an export queue, or a stage's own table (reader.Table)."""

    @property
    def name(self) -> str: ...

    @property
    def db(self) -> Any: ...  # the LMDB sub-database handle


class WriterQueue(Protocol):
    """What the writer thread asks of a queue (`WriterQueue`): where its records live, its
    limits, the leases it published, and the writer-owned totals it moves after a commit."""

    name: str
    signal: Signal
    capacity: QueueCapacity
    db: Any  # the queue's LMDB sub-database handle
    stored: Totals  # writer-owned
    next_seq: int  # writer-owned
    refused_items: int  # the writer adds, a scrape reads
    shifts: Shifts  # writer-owned: the clock steps its records' stamps missed (clocksteps.py)
    stamped_from: int  # the first seq this process stamped

    @property
    def leased_now(self) -> frozenset[int]: ...

    def stats_key(self) -> bytes: ...

    def clock_key(self) -> bytes: ...

    def apply(self, delta: Totals, oldest_ms: int | None) -> None: ...

    def watch(self, seq: int, outcome: asyncio.Future[None]) -> None:
        """On the loop, once the record `seq` is committed: settle `outcome` with its delivery."""
        ...

    def dropped(self, seqs: list[int], reason: str) -> None:
        """On the loop, once records were evicted or expired: answer the clients waiting for them."""
        ...


class WriterStore(Protocol):
    """What the operations and eviction ask of the store (`QueueStore`) inside a transaction."""

    directory: str
    page_size: int
    full: bool  # the last put was refused for lack of room
    deadletter_db: Any

    @property
    def limits(self) -> StorageLimits: ...

    @property
    def queues(self) -> Mapping[str, WriterQueue]: ...

    @property
    def lmdb_env(self) -> lmdb.Environment: ...

    @property
    def writer_compressor(self) -> zstandard.ZstdCompressor | None: ...

    def append_record(self, ctx: Context, queue: WriterQueue, value: bytes, items: int) -> bool: ...

    def free_for_stage(self, ctx: Context, cost: int) -> bool:
        """Make room for `cost` bytes of pages in a stage's table within the disk budget; False when it does not fit."""
        ...


@dataclass
class Commit:
    """What one transaction did, reported back to the event loop."""

    deltas: dict[WriterQueue, Totals] = field(default_factory=dict)
    oldest: dict[WriterQueue, int] = field(default_factory=dict)
    done: list[tuple[asyncio.Future[Any], Any]] = field(default_factory=list)  # (future, its result)
    failed: list[tuple[asyncio.Future[Any], BaseException]] = field(default_factory=list)
    drops: dict[tuple[WriterQueue, str], list[int]] = field(default_factory=dict)  # (queue, reason) -> items
    dropped: dict[tuple[WriterQueue, str], list[int]] = field(default_factory=dict)  # seqs evicted or expired
    dead_lettered: int = 0
    quarantined: dict[StoreTable, int] = field(default_factory=dict)  # queue or table -> records
    watched: list[tuple[WriterQueue, int, asyncio.Future[None]]] = field(default_factory=list)  # wait_for_result
    refused: dict[WriterQueue, int] = field(default_factory=dict)  # items of puts refused, counted once committed

    def delta(self, queue: WriterQueue) -> Totals:
        return self.deltas.setdefault(queue, Totals())

    def merge(self, other: Commit) -> None:
        for queue, delta in other.deltas.items():
            mine = self.delta(queue)
            mine.entries += delta.entries
            mine.items += delta.items
            mine.bytes += delta.bytes
        self.oldest.update(other.oldest)
        self.done += other.done
        self.failed += other.failed
        for key, items in other.drops.items():
            self.drops.setdefault(key, []).extend(items)
        for key, seqs in other.dropped.items():
            self.dropped.setdefault(key, []).extend(seqs)
        self.dead_lettered += other.dead_lettered
        for source, count in other.quarantined.items():
            self.quarantined[source] = self.quarantined.get(source, 0) + count
        self.watched += other.watched
        for queue, refused in other.refused.items():
            self.refused[queue] = self.refused.get(queue, 0) + refused


@dataclass
class TxnState:
    """The writer's running totals inside one transaction."""

    stored: dict[WriterQueue, Totals]
    pages: int
    touched: set[WriterQueue] = field(default_factory=set)
    next_seqs: dict[WriterQueue, int] = field(default_factory=dict)

    def copy(self) -> TxnState:
        return TxnState({q: Totals(t.entries, t.items, t.bytes) for q, t in self.stored.items()}, self.pages,
                        set(self.touched), dict(self.next_seqs))

    def restore(self, other: TxnState) -> None:
        self.stored, self.pages, self.touched, self.next_seqs = (
            other.stored,
            other.pages,
            other.touched,
            other.next_seqs,
        )


@dataclass
class Context:
    """One write transaction as the operations see it."""

    store: WriterStore
    txn: lmdb.Transaction[bytes]
    result: Commit
    state: TxnState
    now_ms: int


class WriterOp:
    client_waits = False
    lingers = False
    between_commits = False
    future: asyncio.Future[Any]

    @property
    def put_bytes(self) -> int:
        return 0

    def prepare(self, now_ms: int) -> None:
        """Encode before the transaction opens (so that a retry need not encode again)."""

    def apply(self, ctx: Context) -> None:
        raise NotImplementedError


@dataclass
class Put(WriterOp):
    """Append one request to its queue."""

    queue: WriterQueue
    payload: bytes  # the request, zstd-compressed already
    items: int
    signal: Signal
    future: asyncio.Future[Any]
    batch_key: bytes = b""
    attributes: bytes = b""  # a serialized KeyValueList for every record, added when read (record.py)
    outcome: asyncio.Future[None] | None = None  # wait_for_result: settled when the record is delivered
    blocks: bool = False  # block_on_overflow: a refusal is tried again, so it is counted only when final
    value: bytes = b""  # the framed record, set by prepare()
    client_waits = True

    @property
    def put_bytes(self) -> int:
        return len(self.payload)

    def prepare(self, now_ms: int) -> None:
        self.value = record.frame(self.signal, self.items, now_ms, self.payload, record.CODEC_ZSTD,
                                  batch_key=self.batch_key, attributes=self.attributes)

    def refuse(self, result: Commit) -> None:
        """Count the items as a failed enqueue (the queue's `refused_items`) once `result` is committed."""
        result.refused[self.queue] = result.refused.get(self.queue, 0) + self.items

    def apply(self, ctx: Context) -> None:
        ctx.state.touched.add(self.queue)
        if ctx.store.append_record(ctx, self.queue, self.value, self.items):
            ctx.result.done.append((self.future, None))
            if self.outcome is not None:
                ctx.result.watched.append((self.queue, ctx.state.next_seqs[self.queue] - 1, self.outcome))
        elif self.queue.capacity.never_holds(1, self.items, len(self.value)):  # offered again, refused again
            self.refuse(ctx.result)
            capacity = self.queue.capacity
            ctx.result.failed.append((self.future, TooLargeForQueueError(
                f"a request of {self.items} items ({len(self.value)} bytes stored) could never fit queue "
                f"{self.queue.name}, whose queue_size is {capacity.size} {capacity.sizer} even when empty: send "
                f"smaller requests, or raise sending_queue::queue_size")))
        else:
            if not self.blocks:
                self.refuse(ctx.result)
            ctx.result.failed.append((self.future, QueueFullError(
                f"queue {self.queue.name} is full; retry later", retry_after=5.0)))


@dataclass
class Delete(WriterOp):
    """An ack; with `dead_letter` a move to the dead-letter store; with `reason` a counted drop."""

    queue: WriterQueue
    seqs: list[int]
    future: asyncio.Future[Any]
    dead_letter: dict[str, Any] | None = None
    reason: str = ""  # set for a counted drop (purge)
    # dead-letter these requests (body, items) instead of the deleted records, compressed by the writer
    replacement: list[tuple[bytes, int]] | None = None
    quarantine: bool = False  # records that do not decode: counted as quarantined
    awaited: bool = False  # a client waits for this delete (wait_for_result): commit soon

    @property
    def lingers(self) -> bool:  # type: ignore[override]
        return self.dead_letter is None and not self.reason and not self.awaited

    @property
    def client_waits(self) -> bool:  # type: ignore[override]
        return self.awaited

    def apply(self, ctx: Context) -> None:
        self.remove(ctx)
        ctx.result.done.append((self.future, None))

    def remove(self, ctx: Context) -> None:
        queue, txn, result = self.queue, ctx.txn, ctx.result
        ctx.state.touched.add(queue)
        for seq in self.seqs:
            value = txn.pop(KEY.pack(seq), db=queue.db)
            if value is None:
                continue
            items = items_of(value)
            ctx.state.stored[queue].add(result.delta(queue), -1, -items, -len(value))
            ctx.state.pages -= footprint(len(value), ctx.store.page_size)
            if self.dead_letter is not None and self.replacement is None:
                deadletter.put(txn, ctx.store.deadletter_db, self.dead_letter, value, ctx.now_ms)
                result.dead_lettered += 1
                if self.quarantine:
                    result.quarantined[queue] = result.quarantined.get(queue, 0) + 1
            elif self.reason:
                result.drops.setdefault((queue, self.reason), []).append(items)
        for body, items in self.replacement or ():
            value = record.encode(queue.signal, items, ctx.now_ms, body, ctx.store.writer_compressor)
            deadletter.put(txn, ctx.store.deadletter_db, self.dead_letter or {}, value, ctx.now_ms)
            result.dead_lettered += 1


@dataclass
class PurgeStep(Delete):
    """One bounded step of a purge: of the records from seq `start` up to (not including) `end`, the
    first `limit` looked at, deleted unless leased and counted as dropped (reason "purged"). Resolves
    to the seqs deleted and where the next step starts (None: nothing was left to look at)."""

    reason: str = "purged"
    start: int = 0
    end: int = 0
    limit: int = 1

    def apply(self, ctx: Context) -> None:
        leased = self.queue.leased_now
        self.seqs, after, looked = [], None, 0
        cursor = ctx.txn.cursor(db=self.queue.db)
        if cursor.set_range(KEY.pack(self.start)):
            for key in cursor.iternext(values=False):
                seq = KEY.unpack(key)[0]
                if seq >= self.end or looked == self.limit:
                    break
                if seq not in leased:
                    self.seqs.append(seq)
                after, looked = seq + 1, looked + 1
        self.remove(ctx)
        ctx.result.done.append((self.future, (self.seqs, after)))


@dataclass
class Replace(WriterOp):
    """What a lease did not deliver (a later request of a split one failed) takes the place of its
    records: one record of `body` at the first one's key, with its batch key and age, so the queue
    keeps its order and the delivered requests are not sent again."""

    queue: WriterQueue
    seqs: list[int]
    body: bytes
    items: int
    attempts: int
    future: asyncio.Future[Any]

    def apply(self, ctx: Context) -> None:
        queue, txn, state = self.queue, ctx.txn, ctx.state
        state.touched.add(queue)
        first = None
        for seq in self.seqs:
            value = txn.pop(KEY.pack(seq), db=queue.db)
            if value is None:
                continue
            first = value if first is None else first
            state.stored[queue].add(ctx.result.delta(queue), -1, -items_of(value), -len(value))
            state.pages -= footprint(len(value), ctx.store.page_size)
        if first is not None:  # (all gone: purged meanwhile)
            try:
                header = record.decode_header(first)
                enqueued, batch_key = header.enqueued_ms, header.batch_key
            except CorruptRecordError:
                enqueued, batch_key = ctx.now_ms, b""
            value = record.encode(queue.signal, self.items, enqueued, self.body, ctx.store.writer_compressor,
                                  self.attempts, batch_key)
            txn.put(KEY.pack(min(self.seqs)), value, db=queue.db)
            state.stored[queue].add(ctx.result.delta(queue), 1, self.items, len(value))
            state.pages += footprint(len(value), ctx.store.page_size)
        ctx.result.done.append((self.future, None))


@dataclass
class SetAttempts(WriterOp):
    """Set the attempt count of leased records."""

    queue: WriterQueue
    seqs: list[int]
    attempts: int
    future: asyncio.Future[Any]

    def apply(self, ctx: Context) -> None:
        ctx.state.touched.add(self.queue)
        for seq in self.seqs:
            key = KEY.pack(seq)
            value = ctx.txn.get(key, db=self.queue.db)
            if value is not None:
                ctx.txn.put(key, record.with_attempts(value, self.attempts), db=self.queue.db)
        ctx.result.done.append((self.future, None))


@dataclass
class Call(WriterOp):
    """Run a function on the writer thread between two commits (maintenance, compaction)."""

    function: Callable[[], Any]
    future: asyncio.Future[Any]
    between_commits = True


class Wake(WriterOp):
    """Nothing to do: ends the writer's wait for a put that is no longer coming (arrivals.py)."""

    between_commits = True


@dataclass
class Atomic(WriterOp):
    """Run `function(writer)` inside the next group commit, all or nothing (a nested transaction):
    how a stage moves data between sub-databases without loss or duplicates across a crash."""

    function: Callable[[TxnWriter], Any]
    future: asyncio.Future[Any]
    client_waits = True

    def apply(self, ctx: Context) -> None:
        before = ctx.state.copy()
        partial = Commit()
        try:
            with ctx.store.lmdb_env.begin(write=True, parent=ctx.txn) as child:
                value = self.function(TxnWriter(ctx.store, Context(ctx.store, child, partial, ctx.state, ctx.now_ms)))
        except Exception as exc:  # reported to the caller; the other operations of the commit go on
            ctx.state.restore(before)
            ctx.result.failed.append((self.future, exc))
            return
        ctx.result.merge(partial)
        ctx.result.done.append((self.future, value))


class TxnWriter:
    """What an atomic operation may do inside the writer's transaction (the `StageTransaction` of api.py).

    Tables are sub-databases a stage opened with `QueueStore.table`; their values are queue records."""

    def __init__(self, store: WriterStore, ctx: Context):
        self.store = store
        self._ctx = ctx
        self.now_ms = ctx.now_ms

    def _encode(self, signal: Signal, body: bytes, items: int, batch_key: bytes, compress: bool) -> bytes:
        compressor = self.store.writer_compressor if compress else None
        return record.encode(signal, items, self.now_ms, body, compressor, batch_key=batch_key)

    def append(self, queue: WriterQueue, body: bytes, items: int, batch_key: bytes = b"") -> None:
        """Append a request to an export queue, as a put would; QueueFullError when it does not fit."""
        value = self._encode(queue.signal, body, items, batch_key, True)
        if not self.store.append_record(self._ctx, queue, value, items):
            if queue.capacity.never_holds(1, items, len(value)):
                raise TooLargeForQueueError(f"a request of {items} items ({len(value)} bytes stored) is more than "
                                            f"queue {queue.name} holds even when empty (queue_size "
                                            f"{queue.capacity.size} {queue.capacity.sizer})")
            raise QueueFullError(f"queue {queue.name} is full; retry later", retry_after=5.0)

    def put(self, table: StoreTable, key: bytes, signal: Signal, body: bytes, items: int, batch_key: bytes = b"",
            compress: bool = True) -> None:
        """Store a request as a record in a stage's own table, within the disk budget."""
        value = self._encode(signal, body, items, batch_key, compress)
        cost = footprint(len(value), self.store.page_size)
        if not self.store.free_for_stage(self._ctx, cost):
            self.store.full = True
            raise QueueFullError(f"queue storage in {self.store.directory} is at its size limit; retry later",
                                 retry_after=5.0)
        self._ctx.txn.put(key, value, db=table.db)
        self._ctx.state.pages += cost

    def delete(self, table: StoreTable, key: bytes) -> bytes | None:
        value = self._ctx.txn.pop(key, db=table.db)
        if value is not None:
            self._ctx.state.pages -= footprint(len(value), self.store.page_size)
        return value

    def quarantine(self, table: StoreTable, key: bytes, reason: str) -> None:
        """Move a record that does not decode to the dead-letter store, counted as quarantined."""
        value = self.delete(table, key)
        if value is None:
            return
        deadletter.put(self._ctx.txn, self.store.deadletter_db,
                       {"queue": table.name, "reason": "corrupt", "error": reason, "key": key.hex(), "status": None},
                       value, self.now_ms)
        result = self._ctx.result
        result.dead_lettered += 1
        result.quarantined[table] = result.quarantined.get(table, 0) + 1


class OutOfOrderAppendError(RetryableError):
    """A record's key was not after the last of its queue: LMDB's append stored nothing. The writer's
    next sequence is wrong (a bug); the commit fails so that nothing is acknowledged unwritten."""


def append(txn: lmdb.Transaction[bytes], queue: WriterQueue, seq: int, value: bytes) -> None:
    """Append a record at `seq` to the tail of `queue`; OutOfOrderAppendError when LMDB refuses it,
    which it does silently (put returns False)."""
    if not txn.put(KEY.pack(seq), value, db=queue.db, append=True):
        raise OutOfOrderAppendError(f"queue {queue.name}: record {seq} is out of order (not after the last "
                                    f"record); nothing was stored", retry_after=1.0)


def items_of(value: bytes | memoryview) -> int:
    try:
        return record.decode_header(value).items
    except CorruptRecordError:
        return 0


def enqueued_ms(value: bytes | memoryview) -> int:
    try:
        return record.decode_header(value).enqueued_ms
    except CorruptRecordError:
        return 0
