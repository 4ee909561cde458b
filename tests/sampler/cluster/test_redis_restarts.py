"""SharedDecisions through a Redis that comes back without what it held (restarted without
persistence), that comes back slowly (loading a large RDB), and through a path too slow for a
whole batch. Real redis-servers; the slow path is a loopback forwarder."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time

import pytest

from sampler.cluster import redis_state
from tests.helpers.redis_server import RedisServer
from tests.sampler.cluster.test_redis_state import _counter, _ids, _in_redis, _shared, _until

pytestmark = pytest.mark.e2e  # every test here runs a redis-server


def _lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "sampler.cluster.redis_state" and text in r.getMessage()]


def test_decisions_lost_by_a_redis_restarted_without_persistence_are_written_again(redis_server, caplog):
    """Redis restarts empty between two operations: the pool reconnects without an error, so no
    outage is seen. The new run_id tells the restart; the replica's decisions of the last ttl are
    written again (the remaining ttl, NX), counted, one info line. One that lost to another
    replica's decision is written as the winner, never as the loser."""
    async def scenario():
        shared, other = _shared(redis_server, ttl="60s"), _shared(redis_server)
        await shared.start()
        await other.start()
        decisions = {trace_id: index % 2 == 0 for index, trace_id in enumerate(_ids(300, 1))}
        lost = _ids(1, 2)[0]
        other.publish({lost: True})
        await _until(lambda: _in_redis(redis_server, {lost: True}) == {lost: True}, message="the winner")
        await other.shutdown()
        shared.publish({**decisions, lost: False})
        await _until(lambda: _counter(shared, "published_decisions") == 301, message="the decisions published")
        assert _counter(shared, "conflicts") == 1

        redis_server.kill()
        redis_server.start()  # same port, empty
        assert _in_redis(redis_server, decisions) == {}
        with caplog.at_level(logging.INFO, logger="sampler.cluster.redis_state"):
            assert await shared.lookup(_ids(1, 9)) == {}  # its connection is made anew: the restart is seen
            await _until(lambda: _in_redis(redis_server, decisions) == decisions, timeout=5,
                         message="the decisions written again")
        assert _in_redis(redis_server, {lost: False}) == {lost: True}
        assert _counter(shared, "republished_decisions") == 301
        assert len(_lines(caplog, "restarted")) == 1, _lines(caplog, "")
        with redis_server.client() as client:
            assert 0 < client.pttl(f"edgeagent:decision:{_ids(1, 1)[0].hex()}") <= 60_000
        await shared.shutdown()
    asyncio.run(scenario())


def test_the_same_redis_reconnected_is_no_restart(redis_server, caplog):
    async def scenario():
        shared = _shared(redis_server)
        await shared.start()
        shared.publish(dict.fromkeys(_ids(10, 1), True))
        await _until(lambda: _counter(shared, "published_decisions") == 10, message="the decisions published")
        with redis_server.client() as client, caplog.at_level(logging.INFO, logger="sampler.cluster.redis_state"):
            client.client_kill_filter(_type="normal", skipme=True)  # every connection of the replica closed

            async def found() -> bool:
                return await shared.lookup(_ids(10, 1)) == dict.fromkeys(_ids(10, 1), True)
            await _until(found, timeout=5, message="the decisions found through new connections")
        assert not _lines(caplog, "restarted")
        assert _counter(shared, "republished_decisions") == 0
        await shared.shutdown()
    asyncio.run(scenario())


def _loading(server: RedisServer) -> bool:
    """PING answers LOADING (a client of redis-py's own would retry it)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"-LOADING")


def test_a_redis_loading_its_data_is_asked_every_second_and_shares_decisions_soon_after(tmp_path, monkeypatch):
    """A Redis restarted with a large RDB answers LOADING until it is loaded (here 12,000 keys at
    200 us each, about 2.6 s). It is alive: probed every second at most, not with the backoff of a
    Redis that does not answer (made long here: 2, 4, 8 s, jittered down to half), so decisions
    are shared within about a second of the load's end."""
    monkeypatch.setattr(redis_state, "_BACKOFF_INITIAL", 2.0)
    server = RedisServer(str(tmp_path)).start()
    with server.client() as client:
        pipe = client.pipeline(transaction=False)
        for index in range(12_000):
            pipe.set(f"filler:{index}", b"x")
        pipe.execute()
        client.save()
    server.kill()
    server = RedisServer(str(tmp_path), port=server.port, args=[
        "--key-load-delay", "200", "--loading-process-events-interval-bytes", "1024"]).start()

    async def scenario():
        shared = _shared(server)
        started = time.monotonic()
        await shared.start()
        assert not shared.up
        await asyncio.sleep(2.2 - (time.monotonic() - started))
        probes = _counter(shared, "errors", "connect")  # start's, then at most 1 s apart
        assert _loading(server), "the load ended too soon for the test to tell"
        assert probes >= 3, probes
        await _until(lambda: not _loading(server), timeout=10, message="the load's end")
        loaded = time.monotonic()
        await _until(lambda: shared.up, timeout=10, message="shared decisions up")
        assert time.monotonic() - loaded < 2.0, time.monotonic() - loaded  # a probe a second, on a loaded machine
        await shared.shutdown()
    try:
        asyncio.run(scenario())
    finally:
        server.kill()


def test_batches_halved_by_a_stall_grow_back_once_writes_are_fast_again(redis_server):
    """A write that timed out (Redis paused) halves the batch; writes that go quickly double it
    again, up to send_batch_size, so a stall does not leave the replica on small pipelines."""
    async def scenario():
        shared = _shared(redis_server, operation_timeout="100ms", send_batch_size=64)
        await shared.start()
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            shared.publish(dict.fromkeys(_ids(64, 1), True))  # a whole batch: leaves at once, times out
            await _until(lambda: not shared.up, timeout=5, message="the write timed out")
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert shared.health()["batch_size"] == 32
        for turn in range(20):  # batches of the current size, each written in a moment
            shared.publish(dict.fromkeys(_ids(64, 10 + turn), True))
            await asyncio.sleep(0.02)
        await _until(lambda: _counter(shared, "published_decisions") == 64 * 21, timeout=5,
                     message="every decision written")
        assert shared.health()["batch_size"] == 64
        await shared.shutdown()
    asyncio.run(scenario())
