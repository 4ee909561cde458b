"""A record whose client waits for its delivery (wait_for_result) and that the queue drops by its
policy (drop_oldest making room, max_age) gives its client an answer at once.

Before, nothing settled the client's wait: it lasted until the request's deadline, and with none
(the HTTP receiver's write_timeout 0, a gRPC client without a deadline) until the agent stopped,
holding the request's memory-limiter reservation all that time. Real LMDB store on disk."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeagent.errors import RetryableError
from edgeagent.queue.limits import QueueCapacity, StorageLimits
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal


def _outcome_of_dropped(tmp_path, limits: StorageLimits, push) -> BaseException | None:
    async def scenario() -> BaseException | None:
        store = QueueStore(str(tmp_path / "queue"), sync=False, limits=limits)
        store.open()
        store.start()
        try:
            queue = store.queue("otlphttp/traces", Signal.TRACES, QueueCapacity(1, "requests"))
            outcome = asyncio.get_running_loop().create_future()
            await asyncio.gather(*store.put_each([queue], b"first", 1, Signal.TRACES, outcomes={queue: outcome}))
            await push(store, queue)
            try:
                await asyncio.wait_for(asyncio.shield(outcome), 3.0)
            except TimeoutError:
                return None
            except Exception as exc:
                return exc
            raise AssertionError("a dropped record cannot have been delivered")
        finally:
            await store.close()

    return asyncio.run(scenario())


def test_a_waited_for_record_evicted_by_drop_oldest_answers_its_client(tmp_path):
    async def push(store, queue) -> None:
        await store.put([queue], b"second", 1, Signal.TRACES)  # the queue holds one: the first goes

    answered = _outcome_of_dropped(tmp_path, StorageLimits(full_policy="drop_oldest"), push)
    assert isinstance(answered, RetryableError), "the client of an evicted record waited on"


@pytest.mark.e2e  # waits for a max_age sweep
def test_a_waited_for_record_expired_by_max_age_answers_its_client(tmp_path):
    async def push(store, queue) -> None:
        started = time.monotonic()
        while queue.entries and time.monotonic() - started < 5:
            await asyncio.sleep(0.05)
        assert queue.entries == 0, "the record did not expire"

    answered = _outcome_of_dropped(tmp_path, StorageLimits(max_age=0.2), push)
    assert isinstance(answered, RetryableError), "the client of an expired record waited on"
