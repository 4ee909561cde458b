"""The queue against a plain in-memory model: put, lease, ack, release, requeue, crash and reopen.

A crash drops the store without releasing its leases (leases live only in memory); the
reopened store must hand out every record that was not acknowledged, oldest first.
A real kill -9 is exercised end to end in tests/e2e/test_crash_torture.py.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

NAME = "otlphttp/traces"

pytestmark = pytest.mark.e2e  # the model runs many examples against LMDB: seconds


class QueueModel(RuleBasedStateMachine):
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="queue-model-")
        self.loop = asyncio.new_event_loop()
        self.next_id = 0
        self.records: dict[int, int] = {}  # id -> items, every record not acknowledged
        self.leased: dict[int, list[int]] = {}  # lease token -> ids
        self.live: dict[int, object] = {}  # lease token -> Lease of the current store
        self.token = 0
        self._open()

    def _run(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def _open(self) -> None:
        async def start() -> QueueStore:
            store = QueueStore(self.directory, sync=False)
            store.open()
            store.start()
            store.queue(NAME, Signal.TRACES)
            return store
        self.store = self._run(start())
        self.queue = self.store.queues[NAME]

    def teardown(self) -> None:
        self._run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _available(self) -> list[int]:
        taken = {i for ids in self.leased.values() for i in ids}
        return sorted(i for i in self.records if i not in taken)

    @rule(items=st.integers(min_value=1, max_value=5))
    def put(self, items: int) -> None:
        record_id = self.next_id
        self.next_id += 1
        self._run(self.store.put([self.queue], record_id.to_bytes(8, "big"), items, Signal.TRACES))
        self.records[record_id] = items

    @rule(target=leases, max_items=st.integers(min_value=1, max_value=12))
    def lease(self, max_items: int):
        lease = self._run(self.queue.lease(max_items=max_items))
        available = self._available()
        if not available:
            assert lease is None
            return None
        expected, total = [], 0
        for record_id in available:  # oldest first, at least one, never past max_items after the first
            if expected and total + self.records[record_id] > max_items:
                break
            expected.append(record_id)
            total += self.records[record_id]
            if total >= max_items:
                break
        assert lease is not None
        assert [int.from_bytes(body, "big") for body in lease.bodies] == expected
        assert lease.items == total
        self.token += 1
        self.leased[self.token] = expected
        self.live[self.token] = lease
        return self.token

    @rule(token=consumes(leases))
    def ack(self, token) -> None:
        if token is None or token not in self.live:
            return
        self._run(self.queue.ack(self.live.pop(token)))
        for record_id in self.leased.pop(token):
            del self.records[record_id]

    @rule(token=consumes(leases))
    def release(self, token) -> None:
        if token is None or token not in self.live:
            return
        self.queue.release(self.live.pop(token))
        del self.leased[token]

    @rule(token=consumes(leases), left=st.integers(min_value=1, max_value=12))
    def requeue(self, token, left: int) -> None:
        """Part of the lease was delivered: what is left takes the first record's place."""
        if token is None or token not in self.live:
            return
        ids = self.leased.pop(token)
        left = min(left, sum(self.records[record_id] for record_id in ids))
        self._run(self.queue.requeue(self.live.pop(token), ids[0].to_bytes(8, "big"), left, 1))
        for record_id in ids[1:]:
            del self.records[record_id]
        self.records[ids[0]] = left

    @rule()
    def crash_and_reopen(self) -> None:
        # leases are not released: they vanish with the process
        self._run(self.store.close())
        self.leased.clear()
        self.live.clear()
        self._open()

    @invariant()
    def totals_match_the_model(self) -> None:
        assert self.queue.entries == len(self.records)
        assert self.queue.items == sum(self.records.values())
        assert self.queue.available_entries == len(self._available())


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
