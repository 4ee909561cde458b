"""A move to the dead-letter store whose commit fails leaves the records readable again.

The storage is really full: a real LMDB environment with a small map, filled with records until
puts are refused. Moving a lease's records to the dead-letter store then fails too (LMDB copies
on write: the move needs free pages, and pages freed in the same transaction are not reused).
Before, the records stayed out of every lease until a restart."""

from __future__ import annotations

import asyncio
import os

import pytest

from edgeagent.errors import QueueFullError
from edgeagent.queue.reader import DurableQueue
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

RECORD = 100_000  # bytes of one record: a few fill the map


async def _full_store(directory: str) -> tuple[QueueStore, DurableQueue]:
    store = QueueStore(directory, sync=False, map_size=4 << 20)
    store.open()
    store.start()
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    body = os.urandom(RECORD)  # random: compression cannot make it smaller
    with pytest.raises(QueueFullError):
        for _ in range(1000):
            await store.put([queue], body, 1, Signal.TRACES)
    return store, queue


@pytest.mark.parametrize("split", [False, True], ids=["whole_lease", "refused_parts"])
def test_a_failed_dead_letter_commit_hands_the_records_out_again(tmp_path, split):
    async def scenario() -> tuple[list[int], list[int], int, int]:
        store, queue = await _full_store(str(tmp_path / "queue"))
        try:
            entries = queue.entries
            lease = await queue.lease(max_items=2, max_entries=2)
            assert lease is not None
            parts = [(os.urandom(2 * RECORD), 2)] if split else None  # parts of a split request, as sent
            with pytest.raises(Exception, match="MAP_FULL"):
                await queue.dead_letter(lease, {"reason": "rejected", "status": 400}, bodies=parts)
            again = await queue.lease(max_items=2, max_entries=2)
            assert again is not None
            return lease.seqs, again.seqs, entries, queue.entries
        finally:
            await store.close()

    first, again, before, after = asyncio.run(scenario())
    assert again == first  # the same records, first in line again
    assert after == before  # nothing left the queue

