"""Drain order and partial dead-lettering at the queue level."""

from __future__ import annotations

import asyncio
import time

from edgeagent.queue import maintenance
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal


def _open(directory) -> tuple[QueueStore, object]:
    store = QueueStore(str(directory))
    store.open()
    store.start()
    return store, store.queue("otlphttp/traces", Signal.TRACES)


def test_newest_first_leases_the_newest_records_and_keeps_their_order_inside_a_lease(tmp_path):
    async def scenario() -> None:
        store, queue = _open(tmp_path)
        for index in range(6):
            await store.put([queue], f"r{index}".encode(), 1, Signal.TRACES)
        first = await queue.lease(max_items=2, newest_first=True)
        second = await queue.lease(max_items=2, newest_first=True)
        assert first.bodies == [b"r4", b"r5"]
        assert second.bodies == [b"r2", b"r3"]
        queue.release(first)  # given back: it is the newest again
        assert (await queue.lease(max_items=2, newest_first=True)).bodies == [b"r4", b"r5"]
        assert (await queue.lease(max_items=5, newest_first=True)).bodies == [b"r0", b"r1"]
        assert await queue.lease(max_items=5, newest_first=True) is None
        await store.close()

    asyncio.run(scenario())


def test_dead_lettering_parts_stores_only_the_refused_parts_and_removes_the_lease(tmp_path):
    async def scenario() -> None:
        store, queue = _open(tmp_path)
        await store.put([queue], b"whole request of ten items", 10, Signal.TRACES)
        lease = await queue.lease(max_items=10)
        await queue.dead_letter(lease, {"status": 413, "reason": "too large"}, bodies=[(b"one refused item", 1)])
        letters = list(maintenance.each_dead_letter(store))
        assert [(letter.body(), letter.header.items, letter.description["status"]) for letter in letters] == [
            (b"one refused item", 1, 413)]
        assert queue.entries == 0 and queue.items == 0
        await store.close()

    asyncio.run(scenario())


def test_records_given_back_while_another_consumer_reads_are_leased_again(tmp_path, monkeypatch):
    """A lease's read runs in a worker thread; records given back meanwhile (released, or the
    undelivered rest of a split batch) once had their place overwritten when the read ended: they
    were never leased again until a restart, and an idle consumer spun, told there was work."""
    from edgeagent.queue import reader

    real = reader.read_batch

    def slow_read(*args, **kwargs):  # the real read, after the give-back below has happened
        time.sleep(0.3)
        return real(*args, **kwargs)

    async def scenario(give_back: str) -> None:
        store, queue = _open(tmp_path / give_back)
        for index in range(3):
            await store.put([queue], f"r{index}".encode(), 1, Signal.TRACES)
        first = await queue.lease(max_items=1)
        monkeypatch.setattr(reader, "read_batch", slow_read)
        reading = asyncio.ensure_future(queue.lease(max_items=1))
        await asyncio.sleep(0.05)
        if give_back == "release":
            queue.release(first)
        else:
            await queue.requeue(first, b"r0 rest", 1, 1)
        second = await reading
        monkeypatch.setattr(reader, "read_batch", real)
        assert second.bodies == [b"r1"]
        await queue.ack(second)
        again = await asyncio.wait_for(queue.lease(max_items=1), 5)
        assert again is not None and again.bodies == [b"r0" if give_back == "release" else b"r0 rest"]
        await queue.ack(again)
        last = await queue.lease(max_items=1)
        assert last is not None and last.bodies == [b"r2"]
        await queue.ack(last)
        assert await queue.lease(max_items=1) is None and queue.entries == 0
        await store.close()

    for give_back in ("release", "requeue"):
        asyncio.run(scenario(give_back))
