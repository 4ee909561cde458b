"""What the queue commands say of a queue's records: ages never below zero."""

from __future__ import annotations

import asyncio
import time

from edgeagent.queue import admin, maintenance
from edgeagent.queue import store as store_module
from edgeagent.queue.ops import KEY, items_of
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


def test_purging_dead_letters_by_seq_removes_those_there_and_counts_them_once(tmp_path):
    async def scenario() -> tuple[int, list[int], int, int]:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        for index in range(3):
            await store.put([queue], f"r{index}".encode(), 1, Signal.TRACES)
            lease = await queue.lease(max_items=1)
            await queue.dead_letter(lease, {"status": 400, "reason": "refused"})
        purged = await maintenance.purge_dead_letters(store, [2, 2, 9])  # one there (twice), one not
        left = [letter.seq for letter in maintenance.each_dead_letter(store)]
        rest = await maintenance.purge_dead_letters(store)
        try:
            return purged, left, rest, store.deadletter_entries
        finally:
            await store.close()

    assert asyncio.run(scenario()) == (1, [1, 3], 2, 0)


def test_a_dead_letter_whose_queue_is_gone_is_kept_as_it_was_and_said_so_on_replay(tmp_path):
    """Its exporter renamed since, the letter cannot go back: replay said "replayed": 0 and nothing
    more, and put the letter back under a new seq, so the one the operator named was gone."""
    async def dead_letter_one() -> None:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        queue = store.queue("old/traces", Signal.TRACES)
        await store.put([queue], b"r", 1, Signal.TRACES)
        await queue.dead_letter(await queue.lease(max_items=1), {"status": 400, "reason": "refused"})
        await store.close()

    async def replay() -> tuple[dict, list[int]]:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        store.queue("new/traces", Signal.TRACES)  # the exporter's name in the config now
        try:
            result = await admin.replay([store], None)
            return result, [letter.seq for letter in maintenance.each_dead_letter(store)]
        finally:
            await store.close()

    asyncio.run(dead_letter_one())
    result, left = asyncio.run(replay())
    assert left == [1]
    assert result["replayed"] == 0 and result["kept"] == 1
    assert "old/traces" in result["why_kept"]


def test_a_purge_in_steps_skips_leased_records_and_keeps_the_totals_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(maintenance, "PURGE_STEP", 3)  # 10 records: four steps

    async def scenario() -> tuple[int, list[int], tuple[int, int, int], tuple[int, int, int]]:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        for index in range(10):
            await store.put([queue], b"r%d" % index, 2, Signal.TRACES)
        lease = await queue.lease(max_items=4)  # the first two records, being sent
        purged = await maintenance.purge(store, queue)
        try:
            with store.lmdb_env.begin() as txn:
                values = {KEY.unpack(key)[0]: value for key, value in txn.cursor(db=queue.db)}
            counted = len(values), sum(map(items_of, values.values())), sum(map(len, values.values()))
            return purged, sorted(values), (queue.entries, queue.items, queue.bytes), counted
        finally:
            queue.release(lease)
            await store.close()

    purged, left, kept, counted = asyncio.run(scenario())
    assert (purged, left) == (8, [1, 2])
    assert kept == counted


def test_replaying_named_seqs_in_steps_moves_each_once(tmp_path, monkeypatch):
    monkeypatch.setattr(maintenance, "REPLAY_STEP", 2)

    async def scenario() -> tuple[dict, list[int], list[bytes]]:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        for index in range(5):
            await store.put([queue], b"r%d" % index, 1, Signal.TRACES)
            await queue.dead_letter(await queue.lease(max_items=1), {"status": 400, "reason": "refused"})
        try:
            result = await admin.replay([store], [5, 1, 1, 3, 9])  # one named twice, one not there
            left = [letter.seq for letter in maintenance.each_dead_letter(store)]
            bodies = [stored.body for stored in store.scan(queue, bodies=True)]
            return result, left, bodies
        finally:
            await store.close()

    result, left, bodies = asyncio.run(scenario())
    assert result == {"replayed": 3, "kept": 0}
    assert left == [2, 4]
    assert bodies == [b"r4", b"r0", b"r2"]
