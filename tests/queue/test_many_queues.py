"""One file_storage directory holds a queue per exporter and signal: a graph with many exporters
sharing it must open, write and reopen, including with the read-only open of `queue stats`."""

from __future__ import annotations

import asyncio

from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

QUEUES = 200  # e.g. 60 exporters on 3 signals plus tail-sampling tables


async def _write_one_to_each(directory: str) -> None:
    store = QueueStore(directory, sync=False)
    queues = [store.queue(f"otlphttp/{i}/traces", Signal.TRACES) for i in range(QUEUES)]
    store.open()
    store.start()
    for queue in queues:
        await store.put([queue], b"span", 1, Signal.TRACES)
    await store.close()


def test_a_store_shared_by_hundreds_of_queues_opens_and_reopens(tmp_path):
    directory = str(tmp_path)
    asyncio.run(_write_one_to_each(directory))
    store = QueueStore(directory, read_only=True)
    store.open()
    queues = [store.queue(f"otlphttp/{i}/traces", Signal.TRACES) for i in range(QUEUES)]
    assert [queue.entries for queue in queues] == [1] * QUEUES
    asyncio.run(store.close())
