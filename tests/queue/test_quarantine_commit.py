"""A quarantine whose commit fails leaves the record where the next lease finds it again.

The storage is really full: a real LMDB environment with a small map, filled with records until
puts are refused, whose first record no longer decodes. Moving it to the dead-letter store fails
(LMDB copies on write: the move needs free pages). Before, the record was left behind the queue's
read position: never read, never quarantined, yet counted as waiting, so once the rest was sent
every lease found nothing while the queue said a record was there (a consumer spinning for good)."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from edgeagent.errors import QueueFullError, RetryableError
from edgeagent.queue.ops import KEY
from edgeagent.queue.reader import DurableQueue
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

RECORD = 100_000  # bytes of one record: a few fill the map
TOO_LONG_KEY = "\xff".encode() * 40_000  # more than the record's 16-bit batch key length


def _damage(store: QueueStore, queue: DurableQueue, seq: int) -> None:
    """On the writer thread: flip the record's zstd checksum, as a bit rotting on disk would."""
    with store.lmdb_env.begin(write=True) as txn:
        value = bytearray(txn.get(KEY.pack(seq), db=queue.db))
        value[-4:] = bytes(byte ^ 0xFF for byte in value[-4:])
        txn.put(KEY.pack(seq), bytes(value), db=queue.db)


async def _until(condition, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_a_failed_quarantine_is_tried_again_by_the_next_lease(tmp_path):
    async def scenario() -> tuple[int, int, list[int]]:
        store = QueueStore(str(tmp_path / "queue"), sync=False, map_size=4 << 20)
        store.open()
        store.start()
        try:
            queue = store.queue("otlphttp/traces", Signal.TRACES)
            body = os.urandom(RECORD)  # random: compression cannot make it smaller
            await store.put([queue], body, 1, Signal.TRACES)
            await store.call(lambda: _damage(store, queue, 1))
            with pytest.raises(QueueFullError):
                for _ in range(1000):
                    await store.put([queue], body, 1, Signal.TRACES)
            lease = await queue.lease(max_items=1, max_entries=1)  # quarantining record 1 fails: map full
            assert lease is not None and lease.seqs == [2]
            await _until(lambda: 1 not in queue.leased_now)  # the failed move settled
            queue.release(lease)
            await store.call(lambda: store.lmdb_env.set_mapsize(64 << 20))  # room again
            again = await queue.lease(max_items=1, max_entries=1)
            assert again is not None
            await _until(lambda: 1 not in queue.leased_now)
            return store.deadletter_entries, queue.entries, again.seqs
        finally:
            await store.close()

    dead_letters, entries, seqs = asyncio.run(scenario())
    assert dead_letters == 1  # the damaged record was quarantined on the second try
    assert seqs == [2] and entries > 0  # and the records after it flow as before


def test_a_record_given_back_to_its_client_stays_in_line_when_its_removal_fails(tmp_path):
    # wait_for_result: retries ran out, so the record goes back to the client that waits for it
    # (removed from the queue). Here the commit carrying that removal fails (it also carries a put
    # whose batch key the record header cannot hold): the record is still queued and must be sent as
    # any other, not left behind the read position
    async def scenario() -> tuple[list[int], BaseException | None]:
        store = QueueStore(str(tmp_path / "queue"), sync=False)
        store.open()
        store.start()
        try:
            queue = store.queue("otlphttp/traces", Signal.TRACES)
            outcome = asyncio.get_running_loop().create_future()
            await asyncio.gather(*store.put_each([queue], b"x" * 100, 1, Signal.TRACES, outcomes={queue: outcome}))
            await store.put([queue], b"y" * 100, 1, Signal.TRACES)
            lease = await queue.lease(max_items=1, max_entries=1)
            assert lease is not None and lease.seqs == [1]
            entered, gate = threading.Event(), threading.Event()
            held = store.call(lambda: entered.set() or gate.wait(5))  # the writer waits: what follows shares a commit
            assert await asyncio.to_thread(entered.wait, 5)
            queue.release(lease, error=RetryableError("upstream still failing"))
            bad = asyncio.ensure_future(store.put([queue], b"z", 1, Signal.TRACES, batch_key=TOO_LONG_KEY))
            await asyncio.sleep(0.05)
            gate.set()
            await held
            with pytest.raises(Exception, match="format requires"):
                await bad
            await _until(lambda: 1 not in queue.leased_now)
            again = await queue.lease(max_items=1, max_entries=1)
            assert again is not None
            return again.seqs, outcome.exception() if outcome.done() else None
        finally:
            await store.close()

    seqs, answered = asyncio.run(scenario())
    assert seqs == [1]  # still queued: first in line again
    assert isinstance(answered, RetryableError)
