"""block_on_overflow: room made by hand (a purge, a dead-letter purge or replay) lets a waiting
request in at once, as an ack does, instead of at its deadline.

Real store; the storage budget (`max_size`, full_policy block) is full of dead letters, and a
request waits for room with a deadline far beyond the bound the test gives it."""

from __future__ import annotations

import asyncio
import os

from edgeagent.queue import maintenance
from edgeagent.queue.limits import QueueCapacity, StorageLimits
from edgeagent.queue.store import QueueStore
from edgeagent.service import delivery
from edgeagent.signals import Signal

DEADLINE = 10.0  # seconds the blocked request would wait if nothing woke it
PROMPT = 2.0  # seconds within which it must be written once room is made
REFUSAL = {"status": 400, "reason": "refused", "response": "x" * 3000}  # an upstream's long answer, kept


def _run(tmp_path, scenario) -> None:
    async def main() -> None:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        try:
            await scenario(store)
        finally:
            await store.close()
    asyncio.run(main())


def _write(store: QueueStore, queue, body: bytes) -> asyncio.Future[list[asyncio.Future[None]]]:
    waits = delivery.Waits(blocking=frozenset({queue}))
    deadline = asyncio.get_running_loop().time() + DEADLINE
    return asyncio.ensure_future(delivery.write(store, [queue], waits, body, 1, Signal.TRACES, b"", b"", deadline))


async def _dead_letters(store: QueueStore, queue, count: int) -> None:
    for index in range(count):
        await store.put([queue], f"r{index}".encode(), 1, Signal.TRACES)
        await queue.dead_letter(await queue.lease(max_items=1), REFUSAL)


async def _full_budget(store: QueueStore, queue) -> asyncio.Future[list[asyncio.Future[None]]]:
    """The budget set just above what the dead letters take: a 40 KiB request waits for room."""
    store.limits = StorageLimits(max_size=store.pages_in_use + (20 << 10), full_policy="block")
    blocked = _write(store, queue, os.urandom(40 << 10))
    await asyncio.sleep(0.2)
    assert not blocked.done()
    return blocked


def test_purging_dead_letters_lets_a_request_waiting_for_room_in_at_once(tmp_path):
    async def scenario(store: QueueStore) -> None:
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        await _dead_letters(store, queue, 20)
        blocked = await _full_budget(store, queue)
        assert await maintenance.purge_dead_letters(store) == 20
        await asyncio.wait_for(blocked, PROMPT)
        assert queue.entries == 1
    _run(tmp_path, scenario)


def test_replaying_dead_letters_lets_a_request_waiting_for_room_in_at_once(tmp_path):
    """Each letter kept the upstream's answer; back in its queue it is only the record again."""
    async def scenario(store: QueueStore) -> None:
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        await _dead_letters(store, queue, 20)
        blocked = await _full_budget(store, queue)
        assert (await maintenance.replay_dead_letters(store))[0] == 20
        await asyncio.wait_for(blocked, PROMPT)
        assert queue.entries == 21
    _run(tmp_path, scenario)


def test_purging_a_queue_lets_a_request_waiting_for_room_in_at_once(tmp_path):
    async def scenario(store: QueueStore) -> None:
        queue = store.queue("full/traces", Signal.TRACES, QueueCapacity(2))
        for body in (b"r1", b"r2"):
            await store.put([queue], body, 1, Signal.TRACES)
        blocked = _write(store, queue, b"r3")
        await asyncio.sleep(0.2)
        assert not blocked.done()
        assert await maintenance.purge(store, queue) == 2
        await asyncio.wait_for(blocked, PROMPT)
        assert queue.entries == 1
    _run(tmp_path, scenario)
