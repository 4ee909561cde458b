"""A record appended out of key order is refused, never acknowledged.

LMDB's append mode stores nothing and reports False when the key is not after the last one. A put
or a dead-letter replay that ignored it answered OK for a record that was not written. Unreachable
while the writer's next sequence is right; here it is set wrong on purpose, and the put and the
replay must fail loudly, with a retryable error, and leave the queue as it was."""

from __future__ import annotations

import asyncio

import pytest

from edgeagent.errors import RetryableError
from edgeagent.queue import admin, maintenance
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal


def _open(directory: str) -> QueueStore:
    store = QueueStore(directory, sync=False)
    store.open()
    store.start()
    return store


def test_a_put_whose_key_is_not_after_the_last_is_refused_and_nothing_is_acknowledged(tmp_path):
    async def scenario() -> None:
        store = _open(str(tmp_path))
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        try:
            for body in (b"first", b"second"):
                await store.put([queue], body, 1, Signal.TRACES)
            right = queue.next_seq
            queue.next_seq = right - 2  # the writer is idle: the next put takes the key of "first"
            with pytest.raises(RetryableError, match="out of order"):
                await asyncio.wait_for(store.put([queue], b"third", 1, Signal.TRACES), 2.0)
            assert (queue.entries, queue.items) == (2, 2)
            assert [bytes(read.body) for read in _records(store)] == [b"first", b"second"]
            queue.next_seq = right
            await asyncio.wait_for(store.put([queue], b"third", 1, Signal.TRACES), 2.0)
            assert [bytes(read.body) for read in _records(store)] == [b"first", b"second", b"third"]
        finally:
            await asyncio.wait_for(store.close(), 2.0)

    asyncio.run(scenario())


def test_a_replay_whose_key_is_not_after_the_last_fails_and_keeps_the_dead_letter(tmp_path):
    async def scenario() -> None:
        store = _open(str(tmp_path))
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        try:
            await store.put([queue], b"refused", 1, Signal.TRACES)
            await queue.dead_letter(await queue.lease(max_items=1), {"status": 400, "reason": "refused"})
            await store.put([queue], b"queued", 1, Signal.TRACES)
            right = queue.next_seq
            queue.next_seq = right - 1  # the key of "queued"
            with pytest.raises(RetryableError, match="out of order"):
                await asyncio.wait_for(maintenance.replay_dead_letters(store), 2.0)
            assert [letter.seq for letter in maintenance.each_dead_letter(store)] == [1]
            assert (queue.entries, queue.next_seq) == (1, right - 1)
            assert [bytes(read.body) for read in _records(store)] == [b"queued"]
        finally:
            await asyncio.wait_for(store.close(), 2.0)

    asyncio.run(scenario())


def _records(store: QueueStore) -> list[admin.Read]:
    return list(admin.records(store, "otlphttp/traces"))
