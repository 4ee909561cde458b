"""What an operator does to a store by hand (`edgeagent queue …`, the control socket): purge a
queue, list, replay or purge dead letters.

Every change runs on the store's writer thread (`QueueStore.call` / `submit`), so it is ordered
with the commits of a running agent; in-memory counts follow on the event loop (`QueueStore.resolve`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

from edgeagent.errors import RetryableError
from edgeagent.queue import deadletter, record
from edgeagent.queue.ops import STATS, Commit, PurgeStep, Totals, append, items_of
from edgeagent.queue.reader import DurableQueue
from edgeagent.queue.store import QueueStore

# A purge or a replay goes a bounded step per transaction, so that what it holds (keys, letters,
# LMDB's dirty pages) stays the same on any backlog, and each step commits the queue's totals with
# the records they count: one cut short (killed) leaves a consistent queue, partly done.
PURGE_STEP = 4096  # records (only their keys are held)
REPLAY_STEP = 1024  # dead letters, each read and decoded
REPLAY_STEP_BYTES = 8 << 20  # of dead letters: fewer when they are large


def purge(store: QueueStore, queue: DurableQueue) -> asyncio.Future[int]:
    """Delete every unleased record of a queue, counted as dropped (reason "purged"); records
    queued once it has begun are kept."""
    async def run() -> int:
        end = await store.call(lambda: queue.next_seq)
        purged, start = 0, 0
        while start is not None:
            seqs, start = await store.submit(partial(PurgeStep, queue, [], start=start, end=end, limit=PURGE_STEP))
            queue.watches.settle(seqs, RetryableError("the queue was purged; send the data again"))
            purged += len(seqs)
        return purged
    return asyncio.ensure_future(run())


def each_dead_letter(store: QueueStore) -> Iterator[deadletter.DeadLetter]:
    """Every dead letter, one at a time, from one read snapshot held until the caller has read the last
    (an export never holds them all)."""
    with store.reading() as txn:
        db = store.deadletter_db  # looked up inside the gate: a live compaction reopens it
        if db is not None:
            yield from deadletter.scan(txn, db)


def replay_dead_letters(store: QueueStore, seqs: list[int] | None = None) -> asyncio.Future[tuple[int, Counter[str]]]:
    """Move dead letters (all when `seqs` is None: those there when it begins) to the tail of their
    queues, to be sent again: how many moved, and how many were kept for each queue the store does
    not have (they stay as they are)."""
    async def run() -> tuple[int, Counter[str]]:
        moved, kept = 0, Counter[str]()
        if seqs is not None:
            wanted = list(dict.fromkeys(seqs))  # a seq named twice moves once
            while wanted:
                step = await store.call(partial(_replay_step, store, wanted))
                wanted = wanted[step.looked:]
                moved += step.moved
                kept.update(step.kept)
            return moved, kept
        last = await store.call(partial(_last_dead_letter, store))
        first = 0
        while first <= last:
            step = await store.call(partial(_replay_step, store, None, first, last))
            moved += step.moved
            kept.update(step.kept)
            first = last + 1 if step.last_seq is None else step.last_seq + 1
        return moved, kept
    return asyncio.ensure_future(run())


def purge_dead_letters(store: QueueStore, seqs: list[int] | None = None) -> asyncio.Future[int]:
    return store.call(lambda: _purge(store, seqs))


@dataclass
class _Replayed:
    """What one step of a replay did."""

    moved: int = 0
    kept: Counter[str] = field(default_factory=Counter)
    last_seq: int | None = None  # of the last letter looked at (None: there was none)
    looked: int = 0  # of the seqs named


def _replay_step(store: QueueStore, seqs: list[int] | None, first: int = 0, last: int = 0) -> _Replayed:
    """On the writer thread, one transaction: the letters of the first of `seqs` (or with None, those
    from seq `first` to `last`), as many as a step holds, go to the tail of their queues and leave the
    dead-letter store together, so a replay cut short moves each once."""
    result, step = Commit(), _Replayed()
    totals: dict[DurableQueue, Totals] = {}
    with store.lmdb_env.begin(write=True) as txn:
        if seqs is None:
            letters = deadletter.run_from(txn, store.deadletter_db, first, last, REPLAY_STEP, REPLAY_STEP_BYTES)
        else:
            letters, step.looked = deadletter.some_of(txn, store.deadletter_db, seqs, REPLAY_STEP, REPLAY_STEP_BYTES)
        for letter in letters:
            step.last_seq = letter.seq
            queue = store.queues.get(letter.description.get("queue", ""))
            if queue is None:  # its exporter is gone from the config (or a stage's table): keep it
                step.kept[letter.description.get("queue", "")] += 1
                continue
            stored = totals.setdefault(queue, Totals(queue.stored.entries, queue.stored.items, queue.stored.bytes))
            value = record.with_attempts(letter.value, 0)
            append(txn, queue, queue.next_seq + result.delta(queue).entries, value)
            stored.add(result.delta(queue), 1, items_of(value), len(value))
            deadletter.delete(txn, store.deadletter_db, letter)
            step.moved += 1
        for queue, stored in totals.items():
            txn.put(queue.stats_key(), STATS.pack(stored.items, stored.bytes), db=store.meta_db)
        remaining = txn.stat(store.deadletter_db)["entries"]
        pages = store.measure_pages(txn)
    # committed: the writer's state moves forward
    for queue, stored in totals.items():
        queue.stored = stored
        queue.next_seq += result.delta(queue).entries
    freed, store.pages_in_use = pages < store.pages_in_use, pages
    store.loop.call_soon_threadsafe(_settle_dead_letters, store, remaining, result, freed)
    return step


def _last_dead_letter(store: QueueStore) -> int:
    with store.lmdb_env.begin() as txn:
        return deadletter.last_seq(txn, store.deadletter_db)


def _purge(store: QueueStore, seqs: list[int] | None) -> int:
    """On the writer thread."""
    with store.lmdb_env.begin(write=True) as txn:
        purged = deadletter.remove(txn, store.deadletter_db, seqs)
        remaining = txn.stat(store.deadletter_db)["entries"]
        pages = store.measure_pages(txn)
    freed, store.pages_in_use = pages < store.pages_in_use, pages
    store.loop.call_soon_threadsafe(_settle_dead_letters, store, remaining, Commit(), freed)
    return purged


def _settle_dead_letters(store: QueueStore, remaining: int, result: Commit, freed: bool) -> None:
    """On the event loop. `freed`: the step left fewer pages in use (dead letters gone, or replayed
    without the upstream's answer they kept), so clients waiting for room in the storage budget
    (block_on_overflow) try again, as after an ack."""
    store.deadletter_entries = remaining
    store.resolve(result)
    if freed:
        store.room.freed_now()
