"""full_policy: drop_oldest makes room for a new record only when that makes it fit."""

from __future__ import annotations

import asyncio
import os

import pytest

from edgeagent.errors import BadRequestError, QueueFullError
from edgeagent.queue.limits import QueueCapacity, StorageLimits
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal


def _open(directory, limits: StorageLimits, capacity: QueueCapacity) -> tuple[QueueStore, object]:
    store = QueueStore(str(directory), limits=limits)
    store.open()
    store.start()
    return store, store.queue("otlphttp/traces", Signal.TRACES, capacity)


@pytest.mark.parametrize("case", ["more items than queue_size", "larger than max_size", "room held by leases"])
def test_a_record_that_cannot_fit_evicts_nothing(tmp_path, case):
    """The oldest records were evicted one by one, counted as dropped, and then the new record was
    refused all the same: acknowledged data lost, and nothing gained for it."""
    limits = StorageLimits(max_size=(4 << 20) if case == "larger than max_size" else 0, full_policy="drop_oldest")
    capacity = QueueCapacity(0, "items") if case == "larger than max_size" else QueueCapacity(10, "items")
    drops: list[int] = []

    async def scenario() -> None:
        store, queue = _open(tmp_path, limits, capacity)
        store.on_drop = lambda queue, reason, items, records: drops.append(items)
        try:
            for index in range(3):
                await store.put([queue], b"record %d" % index, 3, Signal.TRACES)
            if case == "room held by leases":
                await queue.lease(max_items=6)
            big = os.urandom(6 << 20) if case == "larger than max_size" else b"big"
            items = 11 if case == "more items than queue_size" else 5
            # more items than an empty queue takes: refused for good, since a retry is refused again
            refused = BadRequestError if case == "more items than queue_size" else QueueFullError
            with pytest.raises(refused):
                await store.put([queue], big, items, Signal.TRACES)
            assert (queue.entries, queue.items) == (3, 9)
        finally:
            await store.close()

    asyncio.run(scenario())
    assert drops == []


@pytest.mark.parametrize("policy", ["block", "drop_oldest"])
@pytest.mark.parametrize("bound", ["the disk budget", "a full storage"])
def test_the_oldest_dead_letters_give_way_before_any_queued_record(tmp_path, policy, bound):
    """Dead letters held their pages for good. At the disk budget, and where the storage itself
    filled (here the map, with no budget; ENOSPC takes the same path), `block` refused every new
    record while only what the upstream had refused filled the store, and at a full storage
    `drop_oldest` dropped queued data and kept them."""
    drops: list[tuple[str, int]] = []
    letters = 6 if bound == "the disk budget" else 24  # most of a 2 MiB budget; more than a 4 MiB map

    async def scenario() -> None:
        limits = StorageLimits(max_size=(2 << 20) if bound == "the disk budget" else 0, full_policy=policy)
        store = QueueStore(str(tmp_path / "queue"), sync=False, map_size=4 << 20, limits=limits)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES, QueueCapacity())
        store.on_drop = lambda queue, reason, items, records: drops.append((reason, items))
        try:
            for _ in range(letters):  # 256 KiB each
                await store.put([queue], os.urandom(256 << 10), 7, Signal.TRACES)
                await queue.dead_letter(await queue.lease(max_items=7), {"queue": queue.name, "status": 400})
            await store.put([queue], b"queued", 1, Signal.TRACES)
            for _ in range(4):  # more than the room left: dead letters give way, the queued record stays
                await store.put([queue], os.urandom(256 << 10), 1, Signal.TRACES)
            assert queue.entries == 5
            assert 0 < store.deadletter_entries < letters
        finally:
            await store.close()

    asyncio.run(scenario())
    # drops are reported per commit: several letters of 7 items each may share one
    assert drops and {reason for reason, _ in drops} == {"dead_letter"} and all(items % 7 == 0 for _, items in drops)


def test_dead_letters_give_way_at_the_disk_budget_to_a_stage_s_records_too(tmp_path):
    """A stage (tail sampling) stores what it holds in a table of its own: at a budget that only
    dead letters filled, every one of its puts was refused, the upstream being well."""
    drops: list[tuple[str, int]] = []

    async def scenario() -> None:
        store = QueueStore(str(tmp_path / "queue"), sync=False, limits=StorageLimits(max_size=2 << 20))
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES, QueueCapacity())
        table = store.table("stage")
        store.on_drop = lambda queue, reason, items, records: drops.append((reason, items))
        try:
            for _ in range(6):  # 256 KiB each: most of the budget
                await store.put([queue], os.urandom(256 << 10), 7, Signal.TRACES)
                await queue.dead_letter(await queue.lease(max_items=7), {"queue": queue.name, "status": 400})
            for index in range(4):  # more than the room left
                body = os.urandom(256 << 10)
                await store.atomic(lambda writer, key=b"k%d" % index, body=body:
                                   writer.put(table, key, Signal.TRACES, body, 1, compress=False))
            assert 0 < store.deadletter_entries < 6
        finally:
            await store.close()

    asyncio.run(scenario())
    assert drops and {reason for reason, _ in drops} == {"dead_letter"}
