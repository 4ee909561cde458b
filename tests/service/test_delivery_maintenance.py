"""block_on_overflow: room made by hand (a purge) lets a waiting request in at once, as an ack
does, instead of at its deadline; room that dead letters take is never waited for.

Real store; the storage budget (`max_size`, full_policy block) is full, and a request waits for
room with a deadline far beyond the bound the test gives it."""

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


def test_a_request_does_not_wait_for_room_that_dead_letters_take(tmp_path):
    """Dead letters give way to new data at once (queue/eviction.py): purging or replaying them by
    hand is not what lets a request in."""
    async def scenario(store: QueueStore) -> None:
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        await _dead_letters(store, queue, 20)
        store.limits = StorageLimits(max_size=store.pages_in_use + (20 << 10), full_policy="block")
        await asyncio.wait_for(_write(store, queue, os.urandom(40 << 10)), PROMPT)
        assert queue.entries == 1 and 0 < store.deadletter_entries < 20
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
