"""Reading queues: leases, acks, releases, and the byte-level read API every reader shares.

Ownership: a queue's lease state (`_Leases`) belongs to the event loop that runs its
consumers; only coroutines and callbacks on that loop change it. The writer thread needs to
know which records are leased (eviction and max_age skip them); it reads `leased_now`, an
immutable snapshot the loop replaces after every change, never the loop's dict.

Reads run in worker threads against LMDB read snapshots (`QueueStore.reading`), so the event
loop never waits for the disk. A record that does not decode is never handed out: it comes
back as `Corrupt` and is quarantined (moved to the dead-letter store with reason `corrupt`,
counted, logged once with its key), and the records after it keep flowing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import lmdb
import zstandard

from edgeagent.errors import CorruptRecordError, PermanentError, RetryableError
from edgeagent.queue import clocksteps, record
from edgeagent.queue.api import Corrupt, QueueLease, StoredRecord
from edgeagent.queue.environment import StorageUnwritableError
from edgeagent.queue.limits import QueueCapacity
from edgeagent.queue.ops import (
    KEY,
    STATS,
    Delete,
    Replace,
    SetAttempts,
    StoreTable,
    Totals,
    WriterOp,
    enqueued_ms,
    items_of,
)
from edgeagent.queue.watch import Watches
from edgeagent.signals import Signal

log = logging.getLogger(__name__)

_MAX_SCAN = 10_000  # records a lease looks at while gathering one batch key


class QueueHome(Protocol):
    """What a queue and the read API ask of the store that holds them (`QueueStore`)."""

    @property
    def lmdb_env(self) -> lmdb.Environment: ...

    @property
    def meta_db(self) -> Any: ...

    def sub_database(self, name: bytes) -> Any: ...

    def reading(self, table: StoreTable | None = None) -> AbstractContextManager[lmdb.Transaction[memoryview]]: ...

    def submit(self, make_op: Callable[[asyncio.Future[Any]], WriterOp]) -> asyncio.Future[Any]: ...

    def when_writable(self, callback: Callable[[bool], None]) -> None: ...


@dataclass
class Lease:
    """Records handed to one consumer; `ack`, `release` or `dead_letter` ends it."""

    queue: DurableQueue
    seqs: list[int]
    bodies: list[bytes]
    items: int
    attempts: int
    done: bool = False


@dataclass(eq=False)
class Table:
    """A stage's own sub-database in a store (tail sampling's trace buffer)."""

    name: str
    db: Any


@dataclass(frozen=True)
class _Refused:
    """Records the upstream refused for good, on their way to the dead-letter store (`dead_letter`)."""

    seqs: list[int]
    description: dict[str, Any]
    bodies: list[tuple[bytes, int]] | None  # stored instead of the records: the refused parts of a split request
    error: PermanentError  # what a client waiting for them is answered


class _Leases:
    """Which records of one queue are leased, with their items. Event loop only."""

    def __init__(self) -> None:
        self._items: dict[int, int] = {}
        self.items = 0
        self.snapshot: frozenset[int] = frozenset()  # what the writer thread may read

    def __contains__(self, seq: int) -> bool:
        return seq in self._items

    def __len__(self) -> int:
        return len(self._items)

    def seqs(self) -> frozenset[int]:
        return self.snapshot

    def items_of(self, seqs: list[int]) -> int:
        return sum(self._items.get(seq, 0) for seq in seqs)

    def add(self, seqs: list[tuple[int, int]]) -> None:
        for seq, items in seqs:
            self._items[seq] = items
            self.items += items
        self.snapshot = frozenset(self._items)

    def remove(self, seqs: list[int]) -> None:
        for seq in seqs:
            self.items -= self._items.pop(seq, 0)
        self.snapshot = frozenset(self._items)


class DurableQueue:
    """One named FIFO of export requests inside a `QueueStore` (the `ConsumerQueue` of api.py)."""

    def __init__(self, store: QueueHome, name: str, signal: Signal, capacity: QueueCapacity):
        self.store = store
        self.name = name
        self.signal = signal
        self.capacity = capacity
        self.db = store.sub_database(f"q:{name}".encode())
        # mirror of the writer's totals, owned by the event loop
        self.entries = 0
        self.items = 0
        self.bytes = 0
        self.oldest_ms = 0
        # owned by the writer thread
        self.stored = Totals()
        self.next_seq = 1
        self.refused_items = 0  # items of puts that found the queue full; the writer adds, a scrape reads
        self.shifts: clocksteps.Shifts = ()  # the clock steps its records' stamps missed (clocksteps.py)
        self.stamped_from = 1  # the first seq this process stamps: the next one when opened
        # owned by the event loop
        self._leases = _Leases()
        self.watches = Watches()  # records whose client waits for their delivery (watch.py)
        self._watching_ended: BaseException | None = None  # the agent stops: why nobody waits any more
        self._gave_up: asyncio.Future[None] | None = None  # set (and dropped) when a client gives up
        self._read_from = 0
        # the lowest record given back while a lease's read runs in its thread: that read ends by
        # moving _read_from past what it read, and must not move it past these (None: none)
        self._rewound: int | None = None
        self._reading = False
        self._available = asyncio.Event()
        self._grew = asyncio.Event()
        self._lease_lock = asyncio.Lock()
        self._load()

    @property
    def leased_now(self) -> frozenset[int]:
        """The leased records as last published by the event loop (safe to read on any thread)."""
        return self._leases.snapshot

    def _load(self) -> None:
        if self.db is None:  # opened read-only before this queue was ever written
            return
        with self.store.lmdb_env.begin(db=self.db) as txn:
            entries = txn.stat(self.db)["entries"]
            cursor = txn.cursor()
            if cursor.last():
                self.next_seq = KEY.unpack(cursor.key())[0] + 1
            meta = self.store.meta_db
            self.shifts = clocksteps.unpack(txn.get(self.clock_key(), db=meta)) if meta is not None else ()
            if cursor.first():
                self._read_from = KEY.unpack(cursor.key())[0]
                self.oldest_ms = enqueued_ms(cursor.value()) + clocksteps.shift_of(self.shifts, self._read_from)
            stats = txn.get(self.stats_key(), db=meta) if meta is not None else None
            items, size = STATS.unpack(stats) if stats is not None else _scan_totals(txn, self.db)
        self.stored = Totals(entries, items, size)
        self.stamped_from = self.next_seq
        self.entries, self.items, self.bytes = entries, items, size
        if entries:
            self._available.set()

    def stats_key(self) -> bytes:
        return f"stats:{self.name}".encode()

    def clock_key(self) -> bytes:
        return f"clock:{self.name}".encode()

    # ---- consuming -------------------------------------------------------------------------

    @property
    def available_items(self) -> int:
        return self.items - self._leases.items

    @property
    def available_entries(self) -> int:
        return self.entries - len(self._leases)

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
            except TimeoutError:
                return

    async def lease(self, max_items: int, max_entries: int = 0, max_bytes: int = 0,
                    newest_first: bool = False) -> Lease | None:
        """The oldest unleased records, up to `max_items` items, `max_entries` records and `max_bytes`
        of requests (0: no limit; at least one record), or None if empty.

        All records of a lease share the batch key of the first one; records with other keys are
        left for later leases. `newest_first` takes the newest records instead (their bodies still
        in the order they were queued), so current data goes out before a backlog."""
        async with self._lease_lock:
            if self.available_entries <= 0:
                self._available.clear()
                return None
            leased = self._leases.seqs()
            start = None if newest_first else self._read_from
            skip = leased if newest_first else frozenset(seq for seq in leased if seq >= self._read_from)
            self._reading, self._rewound = True, None
            try:
                found = await asyncio.to_thread(read_batch, self.store, self, start, skip,
                                                Limits(max_items, max_entries, max_bytes))
            finally:
                self._reading = False
            if newest_first:
                found.records.reverse()
                found.bodies.reverse()
            elif found.first_skipped is not None:
                self._read_from = found.first_skipped
            elif found.last_seq is not None:
                self._read_from = found.last_seq + 1
            if self._rewound is not None:
                self._read_from = min(self._read_from, self._rewound)
            self._leases.add(found.records)
            if found.corrupt:
                self._quarantine_seqs(found.corrupt)
            if self.available_entries <= 0:
                self._available.clear()
            if not found.records:
                return None
            items = sum(items for _, items in found.records)
            return Lease(self, [seq for seq, _ in found.records], found.bodies, items, found.attempts)

    def quarantine(self, lease: QueueLease, indexes: list[int], reason: str) -> None:
        """Take records of a lease that turned out not to decode (their request does not parse)
        out of it and quarantine them; the lease goes on with the rest."""
        bad = set(indexes)
        if not bad:
            return
        corrupt = [(seq, reason) for index, seq in enumerate(lease.seqs) if index in bad]
        lease.items -= self._leases.items_of([seq for seq, _ in corrupt])
        lease.seqs = [seq for index, seq in enumerate(lease.seqs) if index not in bad]
        lease.bodies = [body for index, body in enumerate(lease.bodies) if index not in bad]
        # the records stay leased (so no one else reads them) until the quarantine commits
        self._quarantine_seqs(corrupt, already_leased=True)

    def _quarantine_seqs(self, corrupt: list[tuple[int, str]], already_leased: bool = False) -> None:
        """Move records that do not decode to the dead-letter store; the queue goes on without them."""
        seqs = [seq for seq, _ in corrupt]
        if not already_leased:
            self._leases.add([(seq, 0) for seq in seqs])
        for seq, reason in corrupt:
            log.error("queue record does not decode; quarantined it in the dead-letter store",
                      extra={"queue": self.name, "seq": seq, "reason": reason})

        def submit() -> None:
            self.store.submit(lambda fut: Delete(self, seqs, fut, dead_letter={
                "queue": self.name, "reason": "corrupt", "error": corrupt[0][1], "status": None},
                quarantine=True)).add_done_callback(settled)

        def settled(future: asyncio.Future[Any], closing: bool = False) -> None:
            if isinstance(None if future.cancelled() else future.exception(), StorageUnwritableError) and not closing:
                # out of every lease until the filesystem takes the move: read again, it would only be moved again
                self._once_writable(submit, lambda: settled(future, closing=True))
                return
            self._leases.remove(seqs)
            if future.cancelled() or future.exception() is not None:  # still stored: to be read (and moved) again
                self._rewind(min(seqs))
            else:
                self.watches.settle(seqs, PermanentError(f"the stored request does not decode: {corrupt[0][1]}"))
            if self.available_entries > 0:
                self._available.set()
        submit()

    def _once_writable(self, retry: Callable[[], object], give_up: Callable[[], None]) -> None:
        """`retry` a refused commit once the filesystem takes writes again; `give_up` if the store closes first."""
        def again(writable: bool) -> None:
            if writable:
                retry()
            else:
                give_up()
        self.store.when_writable(again)

    def _end_lease(self, lease: QueueLease) -> list[int]:
        if lease.done:
            raise RuntimeError("lease already ended")
        lease.done = True
        self._leases.remove(lease.seqs)
        return lease.seqs

    def release(self, lease: QueueLease, attempts: int | None = None,
                error: BaseException | None = None) -> asyncio.Future[Any] | None:
        """Give the records back; they are handed out again first. Optionally record the attempts made.

        With `error` (the retries ran out), records whose client waits for them, or gave up on
        them, go back to that client instead: removed, and the waiting client answered `error`."""
        returned = self.watches.watched(lease.seqs) if error is not None else []
        if returned:
            self._return_to_clients(returned, error)
            lease.seqs = [seq for seq in lease.seqs if seq not in set(returned)]
        seqs = self._end_lease(lease)
        if seqs:
            self._rewind(min(seqs))
            if self.available_entries > 0:
                self._available.set()
        if attempts is not None and lease.seqs:
            counted = self.store.submit(lambda fut: SetAttempts(self, lease.seqs, attempts, fut))
            # awaiting it is optional: a count the storage refuses (said by the store) is not logged again
            counted.add_done_callback(lambda done: done.cancelled() or done.exception())
            return counted
        return None

    def _rewind(self, seq: int) -> None:
        """Records from `seq` on are to be read again: given back, or their delete failed."""
        self._read_from = min(self._read_from, seq)
        if self._reading:
            self._rewound = seq if self._rewound is None else min(self._rewound, seq)

    def watch(self, seq: int, outcome: asyncio.Future[None]) -> None:
        """Settle `outcome` with what becomes of record `seq` (wait_for_result; see watch.py)."""
        self.watches.add(seq, outcome, self._given_up)
        if self._watching_ended is not None:
            self.watches.settle([seq], self._watching_ended)

    def _given_up(self, seq: int) -> None:
        """The client of `seq` stopped waiting: its record goes, unless a lease is sending it."""
        if self._gave_up is not None:
            self._gave_up.set_result(None)
            self._gave_up = None
        if seq in self._leases or seq not in self.watches:
            return  # the lease settles it: delivered, or removed when it gives up (`abandoned`)
        self._return_to_clients([seq], None)

    def waited_for(self, lease: QueueLease) -> bool:
        return bool(self.watches) and bool(self.watches.watched(lease.seqs))

    async def abandoned(self, lease: QueueLease) -> None:
        """Return once every record of `lease` belongs to a client that gave up on it (never for a
        lease holding a record nobody waits for): the sender then stops sending it, as otelcol
        cancels an export whose caller went away."""
        if not lease.seqs or len(self.watches.watched(lease.seqs)) < len(lease.seqs):
            await asyncio.Future()  # a record nobody waits for: sent to the end
        while not all(self.watches.abandoned(seq) for seq in lease.seqs):
            if self._gave_up is None:
                self._gave_up = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._gave_up)

    def _return_to_clients(self, seqs: list[int], error: BaseException | None) -> None:
        """Remove records whose clients own them again, answering those still waiting with `error`.

        The records stay out of every lease until the delete commits, as acked ones do."""
        self._leases.add([(seq, 0) for seq in seqs if seq not in self._leases])

        def removed(future: asyncio.Future[Any]) -> None:
            self._leases.remove(seqs)
            if (future.cancelled() or future.exception() is not None) and seqs:  # still stored: sent as any record
                self._rewind(min(seqs))
            if error is None:
                for seq in seqs:
                    self.watches.forget(seq)
            else:
                self.watches.settle(seqs, error)
            if self.available_entries > 0:
                self._available.set()
        self.store.submit(lambda fut: Delete(self, seqs, fut, awaited=True)).add_done_callback(removed)

    def dropped(self, seqs: list[int], reason: str) -> None:
        """Records the full policy evicted or max_age expired: their waiting clients own them again."""
        if self.watches:
            self.watches.settle(seqs, RetryableError(f"the queue dropped the data ({reason}) before it was "
                                                     f"delivered; send it again"))

    def end_watches(self, error: BaseException) -> None:
        """The agent stops: answer every waiting client with `error`; the records stay queued."""
        self._watching_ended = error
        self.watches.fail_all(error)

    def ack(self, lease: QueueLease) -> asyncio.Future[Any]:
        """Delete delivered records; awaiting the returned future is optional.

        The records stay out of every lease until the delete commits. Acks linger in the writer so
        that many share one commit (less flash wear); a crash before that commit only means those
        records are delivered again."""
        if lease.done:
            raise RuntimeError("lease already ended")
        lease.done = True
        seqs = lease.seqs
        awaited = bool(self.watches.watched(seqs))  # a client waits for this commit: no lingering
        return self._delete_delivered(seqs, awaited, None)

    def _delete_delivered(self, seqs: list[int], awaited: bool,
                          acked: asyncio.Future[Any] | None) -> asyncio.Future[Any]:
        """Submit the delete of delivered records; `acked` (made here the first time) settles once it commits."""
        future = self.store.submit(lambda fut: Delete(self, seqs, fut, awaited=awaited))
        settled = future.get_loop().create_future() if acked is None else acked
        future.add_done_callback(lambda done: self._acked(seqs, awaited, done, settled))
        return settled

    def _acked(self, seqs: list[int], awaited: bool, future: asyncio.Future[Any], acked: asyncio.Future[Any],
               closing: bool = False) -> None:
        self.watches.settle(seqs)  # delivered, whether or not the delete committed
        error = None if future.cancelled() else future.exception()
        if isinstance(error, StorageUnwritableError) and not closing:
            # delivered, and the filesystem refuses the delete: the records stay out of every lease (sending
            # them again and again would gain nothing) until it takes writes, or until the store closes
            self._once_writable(lambda: self._delete_delivered(seqs, awaited, acked),
                                lambda: self._acked(seqs, awaited, future, acked, closing=True))
            return
        self._leases.remove(seqs)
        if (future.cancelled() or error is not None) and seqs:  # still stored: hand them out again
            self._rewind(min(seqs))
        _pass_on(future, acked, closing)
        # between the commit and this callback `available_entries` undercounted, and a lease may
        # have found nothing and cleared the event: wake the consumers again
        if self.available_entries > 0:
            self._available.set()

    async def dead_letter(self, lease: QueueLease, description: dict[str, Any],
                          bodies: list[tuple[bytes, int]] | None = None) -> None:
        """Move records to the dead-letter store with the reason they were rejected.

        With `bodies` (request, items), those are stored instead of the lease's records: the parts
        of a split request that the upstream refused, while the rest was delivered.

        The records stay leased until the move commits. When the filesystem refuses writes the move
        waits for it to take them again (sending them again would only be refused again); when the
        move fails otherwise (the storage is full), or the store closes first, they are handed out
        again, as after a failed ack, and the error is raised."""
        if lease.done:
            raise RuntimeError("lease already ended")
        lease.done = True
        refused = _Refused(lease.seqs, dict(description, queue=self.name), bodies, PermanentError(
            str(description.get("reason", "rejected for good")), status=description.get("status")))
        await asyncio.shield(self._move_refused(refused, None))  # a cancelled caller leaves the move to go on

    def _move_refused(self, refused: _Refused, moved: asyncio.Future[Any] | None) -> asyncio.Future[Any]:
        """Submit the move of refused records; `moved` (made here the first time) settles once it commits."""
        future = self.store.submit(lambda fut: Delete(self, refused.seqs, fut, dead_letter=refused.description,
                                                      replacement=refused.bodies))
        if moved is None:
            moved = future.get_loop().create_future()
            # its caller may be gone (a stop cancelled it): the failure is not left unretrieved for the log
            moved.add_done_callback(lambda done: done.cancelled() or done.exception())
        settled = moved
        future.add_done_callback(lambda done: self._dead_lettered(refused, done, settled))
        return settled

    def _dead_lettered(self, refused: _Refused, future: asyncio.Future[Any], moved: asyncio.Future[Any],
                       closing: bool = False) -> None:
        error = None if future.cancelled() else future.exception()
        if isinstance(error, StorageUnwritableError) and not closing:
            # (the store closes first: they stay queued, refused again after a restart)
            self._once_writable(lambda: self._move_refused(refused, moved),
                                lambda: self._dead_lettered(refused, future, moved, closing=True))
            return
        seqs = refused.seqs
        self._leases.remove(seqs)
        if future.cancelled() or error is not None:
            if seqs:  # still stored: to be read again
                self._rewind(min(seqs))
        else:
            self.watches.settle(seqs, refused.error)
        if not moved.done():
            if error is not None:
                moved.set_exception(error)
            elif future.cancelled():
                moved.cancel()
            else:
                moved.set_result(None)
        if self.available_entries > 0:
            self._available.set()

    def requeue(self, lease: QueueLease, body: bytes, items: int, attempts: int) -> asyncio.Future[Any]:
        """Give back only what a lease did not deliver: `body` replaces its records in one commit, at
        the first one's place (ops.Replace). They stay leased until then, and while the filesystem
        refuses the commit (the delivered part is not sent again); a commit that fails otherwise, or
        the store closing first, gives back the whole lease, to be sent again."""
        if lease.done:
            raise RuntimeError("lease already ended")
        lease.done = True
        seqs = lease.seqs

        def submit() -> asyncio.Future[Any]:
            future = self.store.submit(lambda fut: Replace(self, seqs, body, items, attempts, fut))
            future.add_done_callback(replaced)
            return future

        def replaced(future: asyncio.Future[Any], closing: bool = False) -> None:
            if isinstance(None if future.cancelled() else future.exception(), StorageUnwritableError) and not closing:
                self._once_writable(submit, lambda: replaced(future, closing=True))
                return
            self._leases.remove(seqs)
            if seqs:
                self._rewind(min(seqs))
            _pass_on(future, settled, closing)
            if self.available_entries > 0:
                self._available.set()
        settled = submit().get_loop().create_future()
        return settled

    # ---- bookkeeping applied on the loop after each commit ---------------------------------

    def apply(self, delta: Totals, oldest_ms: int | None) -> None:
        self.entries += delta.entries
        self.items += delta.items
        self.bytes += delta.bytes
        if oldest_ms is not None:
            self.oldest_ms = oldest_ms
        if delta.entries > 0:
            self._grew.set()
        if self.available_entries > 0:
            self._available.set()


# ---- the byte-level read API (worker threads) ----------------------------------------------

@dataclass
class Batch:
    """What one lease read found."""

    records: list[tuple[int, int]]  # (seq, items)
    bodies: list[bytes]
    attempts: int
    corrupt: list[tuple[int, str]]
    last_seq: int | None
    first_skipped: int | None


@dataclass(frozen=True)
class Limits:
    """How much one lease may take: items, records, bytes of requests (0: no limit on that)."""

    items: int
    entries: int = 0
    bytes: int = 0

    def takes(self, items: int, entries: int, size: int) -> bool:
        """Whether a lease may hold this much."""
        return items <= self.items and (not self.entries or entries <= self.entries) \
            and (not self.bytes or size <= self.bytes)

    def full(self, items: int, entries: int, size: int) -> bool:
        """Whether a lease holding this much can take no more."""
        return items >= self.items or bool(self.entries and entries >= self.entries) \
            or bool(self.bytes and size >= self.bytes)


def read_batch(store: QueueHome, queue: StoreTable, start: int | None, skip: frozenset[int],
               limits: Limits) -> Batch:
    """Read and decompress the next records in key order from `start`, or backwards from the
    newest when `start` is None; all of one batch key, within `limits` (at least one record)."""
    found = Batch([], [], 0, [], None, None)
    items = scanned = size = 0
    batch_key = None
    decompressor = zstandard.ZstdDecompressor()
    with store.reading(queue) as txn:
        cursor = txn.cursor()
        if start is None:
            if not cursor.last():
                return found
            walk = cursor.iterprev()
        elif cursor.set_range(KEY.pack(start)):
            walk = iter(cursor)
        else:
            return found
        for key, value in walk:
            seq = KEY.unpack(key)[0]
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
                    if found.first_skipped is None:
                        found.first_skipped = seq
                    continue
                if found.records and not limits.takes(items + header.items, len(found.records) + 1, size):
                    break
                body = record.decode_body(value, header, decompressor)
                if found.records and not limits.takes(items, 0, size + len(body)):
                    break
            except CorruptRecordError as exc:
                found.corrupt.append((seq, str(exc)))
                found.last_seq = seq
                continue
            found.bodies.append(body)
            found.records.append((seq, header.items))
            items += header.items
            size += len(body)
            found.attempts = max(found.attempts, header.attempts)
            found.last_seq = seq
            if limits.full(items, len(found.records), size):
                break
    return found


def scan_table(store: QueueHome, table: Table, bodies: bool = False) -> Iterator[StoredRecord | Corrupt]:
    """Every record of a table, headers only (or with `bodies`, their requests too), in key
    order, from one read snapshot that stays open until the caller has read the last one (so
    a large table is never held in memory)."""
    if table.db is None:
        return
    decompressor = zstandard.ZstdDecompressor()
    with store.reading(table) as txn:
        for key, value in txn.cursor():
            try:
                header = record.decode_header(value)
                body = record.decode_body(value, header, decompressor) if bodies else b""
            except CorruptRecordError as exc:
                yield Corrupt(bytes(key), str(exc))
                continue
            yield StoredRecord(bytes(key), header.items, len(value), header.enqueued_ms, header.batch_key, body)


def read_records(store: QueueHome, table: Table, keys: list[bytes]) -> tuple[dict[bytes, StoredRecord], list[Corrupt]]:
    """The records with these keys (those that exist), with their requests."""
    out: dict[bytes, StoredRecord] = {}
    corrupt: list[Corrupt] = []
    decompressor = zstandard.ZstdDecompressor()
    with store.reading(table) as txn:
        for key in keys:
            value = txn.get(key)
            if value is None:
                continue
            try:
                header = record.decode_header(value)
                body = record.decode_body(value, header, decompressor)
            except CorruptRecordError as exc:
                corrupt.append(Corrupt(key, str(exc)))
                continue
            out[key] = StoredRecord(key, header.items, len(value), header.enqueued_ms, header.batch_key, body)
    return out, corrupt


def _scan_totals(txn: Any, db: Any) -> tuple[int, int]:
    items = size = 0
    for _, value in txn.cursor(db=db):
        size += len(value)
        items += items_of(value)
    return items, size


def _pass_on(future: asyncio.Future[Any], settled: asyncio.Future[Any], closing: bool) -> None:
    """Settle `settled` as the commit `future` ended; cancelled when the store closed before the
    filesystem took writes again (home.py said so once: the records are sent again after a restart)."""
    if settled.done():
        return
    if closing or future.cancelled():
        settled.cancel()
    elif (error := future.exception()) is not None:
        settled.set_exception(error)
    else:
        settled.set_result(future.result())
