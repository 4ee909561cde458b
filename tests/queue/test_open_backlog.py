"""Opening a queue with a backlog costs the same as opening an empty one: nothing walks every record."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

RECORDS = 200_000  # a walk of the keys alone (no values) costs 4 ms of CPU at 50,000: too few to show
BATCH = 20_000


async def _fill(directory: str) -> None:
    """RECORDS records appended by the writer in transactions of BATCH, as the tail-sampling stage
    moves traces to an export queue: the same records and totals as puts, without a future and an
    arrival per record (a tenth of the CPU)."""
    store = QueueStore(directory, sync=False)
    store.open()
    store.start()
    queue = store.queue("otlphttp/traces", Signal.TRACES)

    def append(writer) -> None:
        for _ in range(BATCH):
            writer.append(queue, b"span" * 64, 1)

    for _ in range(RECORDS // BATCH):
        await store.atomic(append)
    await store.close()


def _open_cpu_seconds(directory: str) -> float:
    started = time.process_time()
    store = QueueStore(directory)
    store.open()
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    spent = time.process_time() - started
    assert queue.entries == RECORDS or queue.entries == 0
    asyncio.run(store.close())
    return spent


@pytest.mark.e2e  # takes seconds: fills 200,000 records
def test_opening_a_large_backlog_does_not_walk_every_record(tmp_path):
    empty, full = str(tmp_path / "empty"), str(tmp_path / "full")
    asyncio.run(_fill(full))
    empty_cost = min(_open_cpu_seconds(empty) for _ in range(3))
    full_cost = min(_open_cpu_seconds(full) for _ in range(3))
    assert full_cost < 3 * empty_cost + 0.005, f"open took {full_cost:.3f} s of CPU with {RECORDS} records, " \
                                          f"{empty_cost:.3f} s empty"
