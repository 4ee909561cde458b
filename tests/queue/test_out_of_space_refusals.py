"""Requests refused because the storage itself is full are counted as failed enqueues.

otelcol_exporter_enqueue_failed_* is read from the queue's `refused_items`. A queue at its
queue_size counted its refusals there, but one refused because the map or the filesystem was full
(the commit failed with MDB_MAP_FULL or ENOSPC) was not: receivers answered 503 while the metric,
which the alert rules watch, stayed at 0. A real LMDB environment with a small map fills up here."""

from __future__ import annotations

import asyncio
import os

from edgeagent.errors import QueueFullError
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

RECORD = 100_000  # bytes of one record: a few fill the map
ITEMS = 7


def test_requests_refused_for_a_full_storage_are_counted_as_failed_enqueues(tmp_path):
    async def scenario() -> tuple[int, int]:
        store = QueueStore(str(tmp_path / "queue"), sync=False, map_size=4 << 20)
        store.open()
        store.start()
        refused = 0
        try:
            queue = store.queue("otlphttp/traces", Signal.TRACES)
            for _ in range(200):
                try:
                    await store.put([queue], os.urandom(RECORD), ITEMS, Signal.TRACES)
                except QueueFullError:
                    refused += ITEMS
            counted = await store.call(lambda: queue.refused_items)  # the writer owns the count
            return refused, counted
        finally:
            await store.close()

    refused, counted = asyncio.run(scenario())
    assert refused > 0
    assert counted == refused
