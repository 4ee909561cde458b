"""max_age: records older than it leave the queue, counted, and the queue goes on.

Expiring the last record of a queue left LMDB's cursor past the end while the sweep read on: the
sweep's commit failed, and since a sweep is retried with every commit until one succeeds, every
commit after it failed too. From the moment a queue held only expired records (an upstream away
longer than max_age, or an exporter with no upstream yet that only buffers), every put was refused
and every ack lost, until a restart, which met the same record again. Real LMDB store on disk."""

from __future__ import annotations

import asyncio
import time

from edgeagent.queue.limits import StorageLimits
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal


def test_a_queue_whose_every_record_expired_keeps_taking_puts(tmp_path):
    drops: list[tuple[str, int]] = []

    async def scenario() -> tuple[int, int, int]:
        store = QueueStore(str(tmp_path / "queue"), sync=False, limits=StorageLimits(max_age=0.3),
                           on_drop=lambda queue, reason, items, records: drops.append((reason, items)))
        store.open()
        store.start()
        try:
            queue = store.queue("otlphttp/traces", Signal.TRACES)
            for _ in range(3):
                await store.put([queue], b"old", 2, Signal.TRACES)
            started = time.monotonic()
            while queue.entries and time.monotonic() - started < 5:  # expired by a sweep (one a second)
                await asyncio.sleep(0.05)
            expired = queue.entries
            await asyncio.wait_for(store.put([queue], b"new", 1, Signal.TRACES), 2.0)
            return expired, queue.entries, store.writer_errors
        finally:
            await store.close()

    expired, entries, writer_errors = asyncio.run(scenario())
    assert expired == 0, "the expired records stayed"
    assert entries == 1 and writer_errors == 0
    assert drops == [("max_age", 6)]
