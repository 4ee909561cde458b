"""Group commit: puts wait for company only while company can come."""

from __future__ import annotations

import asyncio
import time

from edgeagent.queue import store as store_module
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

ROUNDS = 30


def test_a_few_clients_after_a_burst_do_not_each_wait_the_whole_linger(tmp_path):
    """After a commit of many puts, two clients in a closed loop (each sends again once answered)
    must not wait out the linger on every request: no more company than them can come."""
    async def scenario() -> int:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        body = b"x" * 1000
        await asyncio.gather(*(store.put([queue], body, 1, Signal.TRACES) for _ in range(16)))
        slow = 0
        for _ in range(ROUNDS):
            started = time.monotonic()
            await asyncio.gather(*(store.put([queue], body, 1, Signal.TRACES) for _ in range(2)))
            slow += time.monotonic() - started >= store_module._LINGER * 0.9
        await store.close()
        return slow

    slow = asyncio.run(scenario())
    assert slow < ROUNDS // 2, f"{slow} of {ROUNDS} rounds of two puts waited the whole linger"
