"""A hub replica frozen (SIGSTOP, the cgroup freezer, a paused VM) while a lookup of shared decisions
is on its way, and Redis answers during the freeze. A held event loop stands in for the frozen
process; Redis holds the lookup's answer (CLIENT PAUSE) until the replica is frozen."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeagent.extensions.metrics import Metrics
from edgeagent.runtime import suspensions
from sampler.cluster.config import SharedStateConfig
from sampler.cluster.redis_state import SharedDecisions

pytestmark = pytest.mark.e2e  # a real redis-server

DECIDED = {bytes(range(16)): True}


def test_a_lookup_answered_while_the_replica_was_frozen_is_read_and_is_no_outage(redis_server):
    # operation_timeout (250 ms) fell due during the freeze and fired in the turn of the loop that the
    # answer arrived in: Redis was marked down, and the rounds after the thaw, which decide the traces
    # that fell due meanwhile, decided without the other replicas' decisions
    async def scenario() -> tuple[dict[bytes, bool], bool]:
        loop = asyncio.get_running_loop()
        suspensions.install(loop)
        config = SharedStateConfig(url=redis_server.url, flush_interval="2ms", operation_timeout="250ms")
        shared = SharedDecisions(config, "tail_sampling/test", Metrics(), timeout=suspensions.timeout)
        await shared.start()
        shared.publish(DECIDED)
        for _ in range(200):  # bounded: until the decision is in Redis
            if await shared.lookup(list(DECIDED)) == DECIDED:
                break
            await asyncio.sleep(0.01)
        try:
            with redis_server.client() as client:
                client.client_pause(200)  # the next lookup is answered 200 ms from now
            lookup = asyncio.ensure_future(shared.lookup(list(DECIDED)))
            await asyncio.sleep(0.05)  # its MGET is out
            time.sleep(1.6)  # frozen: Redis answers meanwhile, and the 250 ms pass
            return await lookup, shared.up
        finally:
            await shared.shutdown()
            suspensions.uninstall(loop)

    found, up = asyncio.run(scenario())
    assert found == DECIDED
    assert up
