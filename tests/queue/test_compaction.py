"""Compaction shrinks the queue file without losing, duplicating or reordering entries."""

from __future__ import annotations

import asyncio
import os

import pytest

from edgeagent.queue.compaction import rebound_due
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

MIB = 1 << 20


async def _fill(store: QueueStore, count: int, size: int = 100_000) -> list[bytes]:
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    bodies = [os.urandom(size) for _ in range(count)]
    for body in bodies:  # one at a time keeps the order of the list
        await store.put([queue], body, 1, Signal.TRACES)
    return bodies


async def _drain(store: QueueStore, count: int) -> list[bytes]:
    queue = store.queues["otlphttp/traces"]
    out: list[bytes] = []
    acks = []
    while len(out) < count:
        lease = await queue.lease(max_items=1, max_entries=1)
        if lease is None:
            break
        out.extend(lease.bodies)
        acks.append(queue.ack(lease))  # acks linger to share a commit: wait for them all at once
    await asyncio.gather(*acks)
    return out


@pytest.mark.e2e  # over a second
def test_live_compaction_shrinks_the_file_and_keeps_every_entry_in_order(tmp_path):
    async def scenario() -> None:
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        bodies = await _fill(store, 300)
        assert await _drain(store, 290) == bodies[:290]
        before = store.file_size()
        assert before > 25 * MIB

        queue = store.queues["otlphttp/traces"]
        more = [os.urandom(1000) for _ in range(20)]
        compaction = store.compact_now()
        writes = [store.put([queue], body, 1, Signal.TRACES) for body in more]  # queued behind the compaction
        held = await queue.lease(max_items=1, max_entries=1)  # a lease across the swap stays valid
        assert (await compaction)[1] < before // 10
        await asyncio.gather(*writes)
        assert held.bodies == [bodies[290]]
        queue.release(held)
        assert store.file_size() < before // 10
        await store.close()

        reopened = QueueStore(str(tmp_path))
        reopened.open()
        reopened.start()
        reopened.queue("otlphttp/traces", Signal.TRACES)
        assert reopened.queues["otlphttp/traces"].entries == 30
        assert await _drain(reopened, 30) == bodies[290:] + more
        await reopened.close()

    asyncio.run(scenario())


def test_rebound_compaction_runs_only_after_growth_and_shrink(tmp_path):
    assert not rebound_due(file_bytes=50 * MIB, live_bytes=1 * MIB, needed_mib=100, trigger_mib=10)
    assert not rebound_due(file_bytes=150 * MIB, live_bytes=20 * MIB, needed_mib=100, trigger_mib=10)
    assert rebound_due(file_bytes=150 * MIB, live_bytes=5 * MIB, needed_mib=100, trigger_mib=10)

    async def scenario() -> None:
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        await _fill(store, 120)
        await _drain(store, 120)
        watcher = asyncio.create_task(store.compact_on_rebound(needed_mib=5, trigger_mib=1, interval=0.05))
        for _ in range(100):
            if store.compactions:
                break
            await asyncio.sleep(0.05)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        assert store.compactions == 1
        assert store.file_size() < 1 * MIB
        await store.close()

    asyncio.run(scenario())


def test_compaction_on_start_keeps_the_backlog(tmp_path):
    async def scenario() -> None:
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        bodies = await _fill(store, 100)
        await _drain(store, 95)
        await store.close()
        before = os.path.getsize(tmp_path / "data.mdb")

        reopened = QueueStore(str(tmp_path), compact_on_start=True)
        reopened.open()
        reopened.start()
        reopened.queue("otlphttp/traces", Signal.TRACES)
        assert os.path.getsize(tmp_path / "data.mdb") < before // 5
        assert await _drain(reopened, 5) == bodies[95:]
        await reopened.close()

    asyncio.run(scenario())


def test_cleanup_on_start_removes_what_an_interrupted_compaction_left(tmp_path):
    from edgeagent.queue.compaction import cleanup_compaction_leftovers

    scratch = tmp_path / "scratch"
    (tmp_path / ".compact-abc").mkdir()
    (tmp_path / ".compact-abc" / "data.mdb").write_bytes(b"x")
    (tmp_path / ".data.mdb.compacted").write_bytes(b"x")
    (scratch / ".compact-def").mkdir(parents=True)
    (tmp_path / "data.mdb").write_bytes(b"keep")
    assert cleanup_compaction_leftovers(str(tmp_path), str(scratch)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.mdb", "scratch"]
    assert list(scratch.iterdir()) == []
