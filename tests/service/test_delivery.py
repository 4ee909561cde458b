"""block_on_overflow at the pipeline's write: waiting for room, the deadline, and what is counted."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeagent.errors import BadRequestError, QueueFullError
from edgeagent.queue.limits import QueueCapacity
from edgeagent.queue.store import QueueStore
from edgeagent.service import delivery
from edgeagent.signals import Signal


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


def _write(store, queue, body: bytes, items: int, deadline: float | None):
    waits = delivery.Waits(blocking=frozenset({queue}))
    return delivery.write(store, [queue], waits, body, items, Signal.TRACES, b"", b"", deadline)


def test_a_blocked_request_is_written_once_room_is_freed(tmp_path):
    async def scenario(store) -> None:
        queue = store.queue("full/traces", Signal.TRACES, QueueCapacity(1))
        await store.put([queue], b"r1", 1, Signal.TRACES)
        blocked = asyncio.ensure_future(_write(store, queue, b"r2", 1, None))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        await queue.ack(await queue.lease(10))
        await asyncio.wait_for(blocked, 2)
        assert (await queue.lease(10)).bodies == [b"r2"] and queue.refused_items == 0
    _run(tmp_path, scenario)


def test_a_request_still_refused_at_its_deadline_is_counted_once_however_often_it_was_tried(tmp_path):
    async def scenario(store) -> None:
        queue = store.queue("full/traces", Signal.TRACES, QueueCapacity(1))
        other = store.queue("other/traces", Signal.TRACES)
        await store.put([queue], b"r1", 1, Signal.TRACES)
        blocked = asyncio.ensure_future(_write(store, queue, b"r2", 3, asyncio.get_running_loop().time() + 0.5))
        for _ in range(3):  # room freed elsewhere in the store: tried again, still full
            await store.put([other], b"o", 1, Signal.TRACES)
            await other.ack(await other.lease(10))
            await asyncio.sleep(0.05)
        with pytest.raises(QueueFullError):
            await blocked
        await store.call(lambda: None)  # the count is made on the writer thread
        assert queue.refused_items == 3
    _run(tmp_path, scenario)


@pytest.mark.parametrize("sizer, items", [("items", 6), ("bytes", 1)])
def test_a_request_larger_than_the_whole_queue_is_refused_at_once(tmp_path, sizer, items):
    async def scenario(store) -> None:
        queue = store.queue("small/traces", Signal.TRACES, QueueCapacity(5, sizer))
        started = time.monotonic()
        with pytest.raises(BadRequestError) as refused:  # for good: offered again, it is refused again
            await _write(store, queue, b"more than five bytes", items, None)
        assert refused.value.status == 413
        assert time.monotonic() - started < 1
    _run(tmp_path, scenario)
