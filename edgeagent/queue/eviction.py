"""Making room inside a write transaction: the full policy, the disk budget (dead letters first), and max_age.

Runs on the writer thread. A leased record is never evicted: the writer reads each queue's
published lease snapshot (`DurableQueue.leased_now`, an immutable set the event loop replaces),
never the event loop's own lease state. See limits.py for the policies.

Evictions for one record run in a nested transaction, kept only when the record then fits: a
record larger than the queue or the budget, or one that only leased records could make room
for, is refused without dropping anything.
"""

from __future__ import annotations

import struct

from edgeagent.errors import CorruptRecordError
from edgeagent.queue import deadletter
from edgeagent.queue.clocksteps import shift_of
from edgeagent.queue.limits import footprint
from edgeagent.queue.ops import KEY, Commit, Context, WriterQueue, enqueued_ms, items_of


def make_room(ctx: Context, queue: WriterQueue, items: int, size: int, cost: int) -> int | None:
    """Bytes of pages freed so that one record fits (0 when it already does), or None to refuse it."""
    limits = ctx.store.limits
    totals = ctx.state.stored[queue]
    over_capacity = queue.capacity.exceeded(totals.entries, totals.items, totals.bytes, items, size)
    over_budget = bool(limits.max_size) and ctx.state.pages + cost > limits.max_size
    if not over_capacity and not over_budget:
        return 0
    drops_queued = limits.full_policy == "drop_oldest"
    if not drops_queued and (over_capacity or not ctx.txn.stat(ctx.store.deadletter_db)["entries"]):
        return None  # only dead letters give way under `block`, and only to the disk budget
    before = ctx.state.copy()
    partial = Commit()
    child = ctx.store.lmdb_env.begin(write=True, parent=ctx.txn)
    try:
        freed = _evict_for(Context(ctx.store, child, partial, ctx.state, ctx.now_ms), queue, items, size, cost)
    except BaseException:
        child.abort()
        ctx.state.restore(before)
        raise
    if freed is None:
        child.abort()
        ctx.state.restore(before)
        return None
    child.commit()
    ctx.result.merge(partial)
    return freed


def _evict_for(ctx: Context, queue: WriterQueue, items: int, size: int, cost: int) -> int | None:
    """Evict from the head until one record fits; None when even that is not enough."""
    limits = ctx.store.limits
    pages = ctx.state.pages
    totals = ctx.state.stored[queue]
    freed = 0
    while queue.capacity.exceeded(totals.entries, totals.items, totals.bytes, items, size):
        released = evict(ctx, 1, queue, "queue_full")
        if not released:
            return None
        freed += released
    if limits.max_size and pages - freed + cost > limits.max_size:
        freed += evict_dead_letters(ctx, pages - freed + cost - limits.max_size)
    if limits.max_size and pages - freed + cost > limits.max_size:
        if limits.full_policy != "drop_oldest":
            return None
        need = pages - freed + cost - limits.max_size
        released = evict(ctx, need, None, "disk_full")
        freed += released
        if released < need:
            return None
    return freed


def stage_room(ctx: Context, cost: int) -> bool:
    """Whether `cost` bytes of pages fit a stage's table within the disk budget: over it, the oldest
    dead letters give way, as to a queue's record (all that it takes, or none); queued records never do."""
    limit = ctx.store.limits.max_size
    over = ctx.state.pages + cost - limit if limit else 0
    if over <= 0:
        return True
    partial = Commit()
    child = ctx.store.lmdb_env.begin(write=True, parent=ctx.txn)
    try:
        freed = evict_dead_letters(Context(ctx.store, child, partial, ctx.state, ctx.now_ms), over)
    except BaseException:
        child.abort()
        raise
    if freed < over:
        child.abort()
        return False
    child.commit()
    ctx.result.merge(partial)
    ctx.state.pages -= freed
    return True


def evict_dead_letters(ctx: Context, need: int) -> int:
    """Delete the oldest dead letters until `need` bytes of pages are free (or none is left); returns
    the bytes freed. They go before any queued record, under either full_policy: they hold what the
    upstream refused, and must never keep out data it takes (a store that filled the budget with
    them over months refused every new request). Counted as drops of their queue, reason dead_letter."""
    freed = 0
    cursor = ctx.txn.cursor(db=ctx.store.deadletter_db)
    found = cursor.first()
    while found and freed < need:
        value = cursor.value()
        freed += footprint(len(value), ctx.store.page_size)
        try:
            letter = deadletter.decode(cursor.key(), value)
            queue, items = ctx.store.queues.get(str(letter.description.get("queue", ""))), letter.header.items
        except (ValueError, struct.error, CorruptRecordError):  # a letter that does not read: dropped all the same
            queue, items = None, 0
        if queue is not None:
            ctx.result.drops.setdefault((queue, "dead_letter"), []).append(items)
        ctx.result.dead_lettered -= 1
        # delete() moves to the next letter, and still returns True after the last one (an empty key then)
        found = cursor.delete() and bool(cursor.key())
    return freed


def evict(ctx: Context, need: int, only: WriterQueue | None, reason: str) -> int:
    """Delete unleased records from the head (oldest first across queues unless `only`); returns bytes freed."""
    txn, result, stored = ctx.txn, ctx.result, ctx.state.stored
    freed = 0
    candidates = [only] if only is not None else list(ctx.store.queues.values())
    cursors = {queue: txn.cursor(db=queue.db) for queue in candidates}
    heads = {queue: cursor.first() for queue, cursor in cursors.items()}
    leased = {queue: queue.leased_now for queue in candidates}
    while freed < need:
        best, best_time = None, 0
        for queue, cursor in cursors.items():
            while heads[queue] and KEY.unpack(cursor.key())[0] in leased[queue]:
                heads[queue] = cursor.next()
            if heads[queue]:
                enqueued = enqueued_ms(cursor.value()) + shift_of(queue.shifts, KEY.unpack(cursor.key())[0])
                if best is None or enqueued < best_time:
                    best, best_time = queue, enqueued
        if best is None:
            break
        cursor = cursors[best]
        seq = KEY.unpack(cursor.key())[0]
        value = bytes(cursor.value())
        txn.delete(cursor.key(), db=best.db)
        heads[best] = cursor.set_range(KEY.pack(seq + 1))
        items = items_of(value)
        stored[best].add(result.delta(best), -1, -items, -len(value))
        result.drops.setdefault((best, reason), []).append(items)
        result.dropped.setdefault((best, reason), []).append(seq)
        ctx.state.touched.add(best)
        freed += footprint(len(value), ctx.store.page_size)
    return freed


def expire(ctx: Context) -> None:
    """Drop records older than max_age (unleased ones; a leased record is being delivered), aged by
    their stamps with the clock steps they missed (clocksteps.py), which keep key order time order."""
    cutoff = ctx.now_ms - int(ctx.store.limits.max_age * 1000)
    for queue in ctx.store.queues.values():
        leased = queue.leased_now
        cursor = ctx.txn.cursor(db=queue.db)
        found = cursor.first()
        while found:
            value = cursor.value()
            seq = KEY.unpack(cursor.key())[0]
            if enqueued_ms(value) + shift_of(queue.shifts, seq) >= cutoff:
                break
            if seq in leased:
                found = cursor.next()
                continue
            items = items_of(value)
            ctx.state.stored[queue].add(ctx.result.delta(queue), -1, -items, -len(value))
            ctx.result.drops.setdefault((queue, "max_age"), []).append(items)
            ctx.result.dropped.setdefault((queue, "max_age"), []).append(seq)
            ctx.state.touched.add(queue)
            # delete() moves to the next record, and still returns True after the last one, leaving
            # the cursor on no record (an empty key)
            found = cursor.delete() and bool(cursor.key())
