"""What the queue commands say of a queue's records: ages never below zero."""

from __future__ import annotations

import asyncio
import time

from edgeagent.queue import admin
from edgeagent.queue import store as store_module
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal


def test_records_written_while_the_clock_was_ahead_are_not_of_negative_age(tmp_path, monkeypatch):
    """A gateway's clock an hour fast until NTP set it back: `queue stats`, `peek` and `status` said
    the oldest record was -3600 s old, where the agent's metric (clamped) said 0."""
    real = time.time

    async def scenario() -> tuple[dict, list]:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        monkeypatch.setattr(store_module.time, "time", lambda: real() + 3600)  # the writer's clock, ahead
        await store.put([queue], b"", 1, Signal.TRACES)
        monkeypatch.setattr(store_module.time, "time", real)
        try:
            return admin.stats([store]), admin.peek([store], 1)
        finally:
            await store.close()

    stats, rows = asyncio.run(scenario())
    assert stats["stores"][0]["queues"]["otlphttp/traces"]["oldest_age_seconds"] == 0.0
    assert rows[0]["age_seconds"] == 0.0
