"""SharedDecisions through what Redis deployments do to their clients: a failover that demotes
the primary the agent is connected to, memory that runs out and frees again. Real redis-servers;
the endpoint's switch to the new primary is a loopback forwarder, as a DNS name or proxy is."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from sampler.cluster import redis_state
from tests.helpers.forwarder import Forwarder
from tests.helpers.net import free_port
from tests.helpers.redis_server import RedisServer
from tests.sampler.cluster.test_redis_state import _counter, _ids, _in_redis, _shared, _until

pytestmark = pytest.mark.e2e  # every test here runs a redis-server


@pytest.fixture
def new_primary(tmp_path):
    directory = tmp_path / "redis-b"
    directory.mkdir()
    server = RedisServer(str(directory)).start()
    yield server
    server.kill()


def _lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "sampler.cluster.redis_state" and text in r.getMessage()]


def test_a_primary_demoted_by_a_failover_is_left_for_the_new_primary_behind_the_endpoint(
        redis_server, new_primary, caplog):
    """The old primary answers every write READONLY on the pooled connections; new connections
    reach the new primary. Decisions flow to it within about a second, none is lost, one outage."""
    endpoint = Forwarder(free_port(), redis_server.port).start()

    async def scenario():
        shared = _shared(endpoint)
        await shared.start()
        await asyncio.gather(*(shared.lookup(_ids(3, 9)) for _ in range(4)))  # a few pooled connections
        before = dict.fromkeys(_ids(10, 1), True)
        shared.publish(before)
        await _until(lambda: _in_redis(redis_server, before) == before, message="decisions at the first primary")

        with caplog.at_level(logging.INFO, logger="sampler.cluster.redis_state"):
            endpoint.target = new_primary.port
            with redis_server.client() as client:
                client.execute_command("REPLICAOF", "127.0.0.1", str(new_primary.port))
            failover = time.monotonic()
            after: dict[bytes, bool] = {}
            for turn in range(20):  # decisions keep coming through the failover
                decisions = dict.fromkeys(_ids(5, 100 + turn), turn % 2 == 0)
                after.update(decisions)
                shared.publish(decisions)
                await asyncio.sleep(0.01)
            await _until(lambda: _in_redis(new_primary, after) == after, timeout=5,
                         message="the decisions at the new primary")
            shared_again = time.monotonic() - failover
        assert shared_again < 2.0, shared_again
        assert _counter(shared, "dropped_decisions", "refused") == 0
        assert await shared.lookup(list(after)) == after
        assert len(_lines(caplog, "unavailable")) == 1, _lines(caplog, "")
        assert len(_lines(caplog, "available again")) == 1, _lines(caplog, "")
        await shared.shutdown()
    try:
        asyncio.run(scenario())
    finally:
        endpoint.stop()


def test_memory_running_out_again_and_again_is_one_refusal_episode_with_one_warning(redis_server, caplog,
                                                                                   monkeypatch):
    """maxmemory with noeviction at its edge: expiries free a little memory, decisions fill it
    again, so writes are refused, stored, refused... One warning for the episode, one line once
    writes have been stored for a while, and a refusal after that is a new episode."""
    monkeypatch.setattr(redis_state, "_REFUSALS_OVER_AFTER", 1.0, raising=False)

    async def scenario():
        shared = _shared(redis_server)
        await shared.start()
        with redis_server.client() as client, caplog.at_level(logging.INFO, logger="sampler.cluster.redis_state"):
            client.config_set("maxmemory-policy", "noeviction")
            for turn in range(5):
                client.config_set("maxmemory", 1)  # any write is refused: -OOM
                shared.publish({_ids(1, 10 + turn)[0]: True})
                await _until(lambda: _counter(shared, "dropped_decisions", "refused") == turn + 1,  # noqa: B023
                             message="a refused decision")
                client.config_set("maxmemory", 0)  # memory freed
                stored = {_ids(1, 20 + turn)[0]: False}
                shared.publish(stored)
                await _until(lambda: _in_redis(redis_server, stored) == stored,  # noqa: B023
                             message="a stored decision")
            assert len(_lines(caplog, "refuses")) == 1, _lines(caplog, "")
            assert not _lines(caplog, "again")

            await asyncio.sleep(1.1)  # writes stored all along: the next one ends the episode
            stored = {_ids(1, 30)[0]: True}
            shared.publish(stored)
            await _until(lambda: _in_redis(redis_server, stored) == stored, message="stored after the episode")
            assert len(_lines(caplog, "stores sampling decisions again")) == 1, _lines(caplog, "")

            client.config_set("maxmemory", 1)
            shared.publish({_ids(1, 40)[0]: True})
            await _until(lambda: _counter(shared, "dropped_decisions", "refused") == 6, message="a new episode")
            client.config_set("maxmemory", 0)
        assert len(_lines(caplog, "refuses")) == 2, _lines(caplog, "")
        assert shared.up
        await shared.shutdown()
    asyncio.run(scenario())


def _readonly_probes(server: RedisServer) -> int:
    """The probes (DEL) the server refused as a replica (INFO commandstats)."""
    with server.client() as client:
        return int(client.info("commandstats").get("cmdstat_del", {}).get("rejected_calls", 0))


def test_a_demoted_primary_is_asked_again_every_second_until_the_endpoint_leads_elsewhere(
        redis_server, new_primary):
    """A DNS name keeps leading to the demoted primary for its TTL. It answers READONLY at once:
    asked again each second (not after 3, 6, 12 s as a Redis that does not answer), so decisions
    are shared within a second of the endpoint leading to the new primary."""
    endpoint = Forwarder(free_port(), redis_server.port).start()

    async def scenario():
        shared = _shared(endpoint)
        await shared.start()
        with redis_server.client() as client:
            client.execute_command("REPLICAOF", "127.0.0.1", str(new_primary.port))
        shared.publish({_ids(1, 1)[0]: True})
        # probes after 0.1, 0.2, 0.4, 0.8, then 1 s (jittered down to half): the 7th by 4.5 s;
        # doubling on (1.6, 3.2 s) the 7th comes after 6.3 s at the soonest
        await _until(lambda: _readonly_probes(redis_server) >= 7, timeout=5.5, message="seven probes")
        endpoint.target = new_primary.port
        switched = time.monotonic()
        after = dict.fromkeys(_ids(5, 2), False)
        shared.publish(after)
        await _until(lambda: _in_redis(new_primary, after) == after, timeout=5, message="shared again")
        assert time.monotonic() - switched < 1.5
        assert _in_redis(new_primary, {_ids(1, 1)[0]: True}) == {_ids(1, 1)[0]: True}  # waited, not lost
        await shared.shutdown()
    try:
        asyncio.run(scenario())
    finally:
        endpoint.stop()


def test_a_path_too_slow_for_a_whole_batch_carries_smaller_ones_after_one_outage(redis_server, caplog):
    """Through a path of 50 kB/s a batch of 1,000 decisions (about 116 kB of SETs) cannot go within
    operation_timeout (0.25 s), while the probe's one DEL goes at once: no decision ever reached
    Redis, and each probe ended the outage for the next batch to begin another. A batch that timed
    out is halved (1,000, 500, 250, 125, 62): one outage, ended by the first batch that goes
    through, then decisions flow at what the path carries (about 430 SETs a second at most)."""
    endpoint = Forwarder(free_port(), redis_server.port, rate=50_000).start()

    async def scenario():
        shared = _shared(endpoint)
        await shared.start()
        with caplog.at_level(logging.INFO, logger="sampler.cluster.redis_state"):
            shared.publish(dict.fromkeys(_ids(3000, 1000), True))
            await asyncio.sleep(4.0)
        failed, stored = _counter(shared, "errors", "publish"), _counter(shared, "published_decisions")
        await shared.shutdown()
        return failed, stored

    try:
        failed, stored = asyncio.run(scenario())
    finally:
        endpoint.stop()
    assert stored >= 500, stored  # none before; 62 a trip from about 1.5 s on
    assert len(_lines(caplog, "unavailable")) == 1, _lines(caplog, "")
    assert len(_lines(caplog, "available again")) == 1, _lines(caplog, "")
    assert failed <= 7, failed  # 1,000, 500, 250, 125 time out; probes back off between them
