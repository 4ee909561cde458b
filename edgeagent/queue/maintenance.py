"""What an operator does to a store by hand (`edgeagent queue …`, the control socket): purge a
queue, list, replay or purge dead letters.

Every change runs on the store's writer thread (`QueueStore.call` / `submit`), so it is ordered
with the commits of a running agent; in-memory counts follow on the event loop (`QueueStore.resolve`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

from edgeagent.errors import RetryableError
from edgeagent.queue import deadletter, record
from edgeagent.queue.ops import KEY, STATS, Commit, Delete, items_of
from edgeagent.queue.reader import DurableQueue
from edgeagent.queue.store import QueueStore


def purge(store: QueueStore, queue: DurableQueue) -> asyncio.Future[int]:
    """Delete every unleased record of a queue, counted as dropped (reason "purged")."""
    def seqs() -> list[int]:
        leased = queue.leased_now
        with store.lmdb_env.begin(db=queue.db) as txn:
            return [seq for seq in (KEY.unpack(key)[0] for key, _ in txn.cursor()) if seq not in leased]

    async def run() -> int:
        targets = await store.call(seqs)
        await store.submit(lambda fut: Delete(queue, targets, fut, reason="purged"))
        queue.watches.settle(targets, RetryableError("the queue was purged; send the data again"))
        return len(targets)
    return asyncio.ensure_future(run())


def each_dead_letter(store: QueueStore) -> Iterator[deadletter.DeadLetter]:
    """Every dead letter, one at a time, from one read snapshot held until the caller has read the last
    (an export never holds them all)."""
    with store.reading() as txn:
        db = store.deadletter_db  # looked up inside the gate: a live compaction reopens it
        if db is not None:
            yield from deadletter.scan(txn, db)


def replay_dead_letters(store: QueueStore, seqs: list[int] | None = None) -> asyncio.Future[tuple[int, Counter[str]]]:
    """Move dead letters (all when `seqs` is None) to the tail of their queues, to be sent again:
    how many moved, and how many were kept for each queue the store does not have."""
    return store.call(lambda: _replay(store, seqs))


def purge_dead_letters(store: QueueStore, seqs: list[int] | None = None) -> asyncio.Future[int]:
    return store.call(lambda: _purge(store, seqs))


def _replay(store: QueueStore, seqs: list[int] | None) -> tuple[int, Counter[str]]:
    """On the writer thread."""
    result = Commit()
    moved, kept = 0, Counter[str]()
    with store.lmdb_env.begin(write=True) as txn:
        for letter in deadletter.take(txn, store.deadletter_db, seqs):
            queue = store.queues.get(letter.description.get("queue", ""))
            if queue is None:  # its exporter is gone from the config (or a stage's table): keep it
                deadletter.put_back(txn, store.deadletter_db, letter)
                kept[letter.description.get("queue", "")] += 1
                continue
            value = record.with_attempts(letter.value, 0)
            txn.put(KEY.pack(queue.next_seq), value, db=queue.db, append=True)
            queue.next_seq += 1
            queue.stored.add(result.delta(queue), 1, items_of(value), len(value))
            txn.put(queue.stats_key(), STATS.pack(queue.stored.items, queue.stored.bytes), db=store.meta_db)
            moved += 1
        remaining = txn.stat(store.deadletter_db)["entries"]
        store.pages_in_use = store.measure_pages(txn)
    store.loop.call_soon_threadsafe(_settle_dead_letters, store, remaining, result)
    return moved, kept


def _purge(store: QueueStore, seqs: list[int] | None) -> int:
    """On the writer thread."""
    with store.lmdb_env.begin(write=True) as txn:
        purged = deadletter.remove(txn, store.deadletter_db, seqs)
        remaining = txn.stat(store.deadletter_db)["entries"]
        store.pages_in_use = store.measure_pages(txn)
    store.loop.call_soon_threadsafe(_settle_dead_letters, store, remaining, Commit())
    return purged


def _settle_dead_letters(store: QueueStore, remaining: int, result: Commit) -> None:
    """On the event loop."""
    store.deadletter_entries = remaining
    store.resolve(result)
