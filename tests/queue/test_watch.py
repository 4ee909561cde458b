"""Records a client waits for (wait_for_result) at the queue level: every way a record ends tells its client."""

from __future__ import annotations

import asyncio

import pytest

from edgeagent.errors import PermanentError, RetryableError, ShutdownError
from edgeagent.queue import maintenance
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal


async def _watched_put(store: QueueStore, queue, body: bytes) -> asyncio.Future[None]:
    outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await asyncio.gather(*store.put_each([queue], body, 1, Signal.TRACES, outcomes={queue: outcome}))
    return outcome


async def _settled(queue) -> None:
    """Until the commits under way have been applied (a removal's delete included)."""
    for _ in range(200):
        if not len(queue.watches) and queue.entries == queue.stored.entries:
            return
        await asyncio.sleep(0.01)


def _run(tmp_path, scenario) -> None:
    async def main() -> None:
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        try:
            await scenario(store, store.queue("otlphttp/traces", Signal.TRACES))
        finally:
            await store.close()
    asyncio.run(main())


def test_an_ack_tells_the_waiting_client_its_record_was_delivered(tmp_path):
    async def scenario(store, queue) -> None:
        outcome = await _watched_put(store, queue, b"r1")
        lease = await queue.lease(10)
        assert queue.waited_for(lease) and not outcome.done()
        await queue.ack(lease)
        assert outcome.done() and outcome.result() is None
    _run(tmp_path, scenario)


def test_a_dead_letter_gives_the_client_the_upstreams_refusal(tmp_path):
    async def scenario(store, queue) -> None:
        outcome = await _watched_put(store, queue, b"r1")
        lease = await queue.lease(10)
        await queue.dead_letter(lease, {"status": 400, "reason": "bad data"})
        with pytest.raises(PermanentError) as refused:
            outcome.result()
        assert refused.value.status == 400
    _run(tmp_path, scenario)


def test_retries_running_out_give_the_record_back_to_its_client_and_keep_the_others(tmp_path):
    async def scenario(store, queue) -> None:
        await store.put([queue], b"nobody waits", 1, Signal.TRACES)
        outcome = await _watched_put(store, queue, b"r1")
        lease = await queue.lease(10)
        queue.release(lease, attempts=1, error=RetryableError("upstream down"))
        await _settled(queue)
        with pytest.raises(RetryableError):
            outcome.result()
        again = await queue.lease(10)
        assert again.bodies == [b"nobody waits"] and queue.entries == 1
    _run(tmp_path, scenario)


def test_a_client_that_gives_up_takes_its_unsent_record_back(tmp_path):
    async def scenario(store, queue) -> None:
        outcome = await _watched_put(store, queue, b"r1")
        outcome.cancel()
        await _settled(queue)
        assert queue.entries == 0 and await queue.lease(10) is None
    _run(tmp_path, scenario)


def test_a_lease_whose_every_client_gave_up_is_abandoned_and_its_records_removed_on_release(tmp_path):
    async def scenario(store, queue) -> None:
        outcomes = [await _watched_put(store, queue, body) for body in (b"r1", b"r2")]
        lease = await queue.lease(10)
        abandoned = asyncio.ensure_future(queue.abandoned(lease))
        outcomes[0].cancel()
        await asyncio.sleep(0.01)
        assert not abandoned.done() and queue.entries == 2  # being sent: it stays until the lease ends
        outcomes[1].cancel()
        await asyncio.wait_for(abandoned, 1)
        queue.release(lease, attempts=1, error=RetryableError("every client gave up"))
        await _settled(queue)
        assert queue.entries == 0
    _run(tmp_path, scenario)


def test_a_lease_holding_a_record_nobody_waits_for_is_never_abandoned(tmp_path):
    async def scenario(store, queue) -> None:
        await store.put([queue], b"nobody waits", 1, Signal.TRACES)
        outcome = await _watched_put(store, queue, b"r1")
        lease = await queue.lease(10)
        abandoned = asyncio.ensure_future(queue.abandoned(lease))
        outcome.cancel()
        await asyncio.sleep(0.05)
        assert not abandoned.done()
        abandoned.cancel()
    _run(tmp_path, scenario)


def test_stopping_answers_every_waiting_client_and_keeps_their_records(tmp_path):
    async def scenario(store, queue) -> None:
        outcome = await _watched_put(store, queue, b"r1")
        store.end_waits(ShutdownError("stopping"))
        with pytest.raises(ShutdownError):
            outcome.result()
        later = await _watched_put(store, queue, b"r2")  # committed while stopping: answered at once
        with pytest.raises(ShutdownError):
            later.result()
        assert queue.entries == 2
        with pytest.raises(ShutdownError):
            await store.room.wait(store.room.freed)
    _run(tmp_path, scenario)


def test_a_commit_that_frees_room_wakes_a_client_waiting_for_it(tmp_path):
    async def scenario(store, queue) -> None:
        await store.put([queue], b"r1", 1, Signal.TRACES)
        seen = store.room.freed
        waiting = asyncio.ensure_future(store.room.wait(seen))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await queue.ack(await queue.lease(10))
        await asyncio.wait_for(waiting, 1)
    _run(tmp_path, scenario)


def test_a_purge_answers_the_clients_of_the_records_it_removes(tmp_path):
    async def scenario(store, queue) -> None:
        outcome = await _watched_put(store, queue, b"r1")
        assert await maintenance.purge(store, queue) == 1
        with pytest.raises(RetryableError, match="purged"):
            outcome.result()
    _run(tmp_path, scenario)
