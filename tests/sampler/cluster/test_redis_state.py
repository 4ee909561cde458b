"""SharedDecisions against a real redis-server: round trips, TTL, batching, first writer wins,
and Redis vanishing and coming back while the agent keeps going."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import time

import pytest

from edgeagent.extensions.metrics import Metrics
from sampler.cluster.config import SharedStateConfig
from sampler.cluster.redis_state import SharedDecisions
from tests.helpers.redis_server import RedisServer

pytestmark = pytest.mark.e2e  # every test here runs a redis-server


def _ids(count: int, seed: int = 0) -> list[bytes]:
    return [(seed * 1_000_000 + index).to_bytes(16, "big") for index in range(count)]


def _shared(server: RedisServer, **options) -> SharedDecisions:
    config = SharedStateConfig(url=server.url, **{"flush_interval": "2ms", **options})
    return SharedDecisions(config, "tail_sampling/test", Metrics())


def _counter(shared: SharedDecisions, name: str, *labels: str) -> float:
    return shared.metrics.counters[f"edgeagent_sampler_shared_state_{name}"].get(shared.id, *labels)


def _up(shared: SharedDecisions) -> float:
    return next(value for _, value in shared.metrics.gauges["edgeagent_sampler_shared_state_up"].read())


async def _until(predicate, timeout: float = 10.0, message: str = "condition") -> None:
    """Wait until `predicate()` (a value or an awaitable) is true; bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


async def _published(shared: SharedDecisions, decisions: dict[bytes, bool]) -> None:
    async def all_there() -> bool:
        return await shared.lookup(list(decisions)) == decisions
    await _until(all_there, message="the decisions in Redis")


def test_published_decisions_are_found_by_lookup_and_unknown_ids_are_left_out(redis_server):
    async def scenario():
        shared = _shared(redis_server)
        await shared.start()
        kept, dropped, unknown = _ids(3, 1), _ids(3, 2), _ids(3, 3)
        decisions = {**dict.fromkeys(kept, True), **dict.fromkeys(dropped, False)}
        shared.publish(decisions)
        await _published(shared, decisions)
        assert await shared.lookup(kept + unknown + dropped) == decisions
        assert await shared.lookup(unknown) == {}
        assert await shared.lookup([]) == {}
        assert _up(shared) == 1
        assert _counter(shared, "published_decisions") == 6
        await shared.shutdown()
    asyncio.run(scenario())
    with redis_server.client() as client:  # the key layout the README documents
        assert client.get(b"edgeagent:decision:" + _ids(1, 1)[0].hex().encode()) == b"1"
        assert client.get(b"edgeagent:decision:" + _ids(1, 2)[0].hex().encode()) == b"0"


def test_decisions_are_stored_with_the_configured_ttl_and_prefix(redis_server):
    async def scenario():
        shared = _shared(redis_server, ttl="90s", key_prefix="hub-a:")
        await shared.start()
        shared.publish({_ids(1)[0]: True})
        await _published(shared, {_ids(1)[0]: True})
        await shared.shutdown()
    asyncio.run(scenario())
    with redis_server.client() as client:
        key = b"hub-a:" + _ids(1)[0].hex().encode()
        assert 85_000 < client.pttl(key) <= 90_000
        assert client.keys(b"edgeagent:decision:*") == []


def test_a_decision_is_forgotten_once_its_ttl_has_passed(redis_server):
    async def scenario():
        shared = _shared(redis_server, ttl="1s")
        await shared.start()
        shared.publish({_ids(1)[0]: False})
        await _published(shared, {_ids(1)[0]: False})
        await asyncio.sleep(1.3)
        assert await shared.lookup(_ids(1)) == {}
        await shared.shutdown()
    asyncio.run(scenario())


def _stats(client) -> tuple[int, int]:
    """(socket reads Redis made, SETs it ran) so far, in one INFO: one read of its own."""
    info = client.info("all")
    return int(info["total_reads_processed"]), int(info.get("cmdstat_set", {}).get("calls", 0))


def test_many_decisions_share_few_round_trips(redis_server):
    """1,000 decisions published one by one leave in 10 pipelines of 100: Redis runs 1,000 SETs
    but reads its socket a few times per pipeline, where a round trip per decision reads 1,000."""
    async def scenario():
        shared = _shared(redis_server, send_batch_size=100, flush_interval="200ms")
        await shared.start()
        with redis_server.client() as client:
            reads_before, sets_before = _stats(client)
            decisions = {trace_id: index % 2 == 0 for index, trace_id in enumerate(_ids(1000))}
            for trace_id, keep in decisions.items():
                shared.publish({trace_id: keep})
            await _until(lambda: _counter(shared, "published_decisions") == 1000,
                         message="1,000 decisions published")
            reads_after, sets_after = _stats(client)
        assert sets_after - sets_before == 1000
        reads = reads_after - reads_before - 1  # less the second INFO's own read
        assert reads <= 10 * 2, reads  # a pipeline of 100 SETs is ~11 kB: one 16 kB read, two when split
        assert await shared.lookup(list(decisions)) == decisions
        await shared.shutdown()
    asyncio.run(scenario())


def test_a_full_batch_leaves_without_waiting_for_the_flush_interval(redis_server):
    async def scenario():
        shared = _shared(redis_server, send_batch_size=100, flush_interval="30s")
        await shared.start()
        decisions = dict.fromkeys(_ids(100), True)
        started = time.monotonic()
        shared.publish(decisions)
        await _published(shared, decisions)
        assert time.monotonic() - started < 5
        await shared.shutdown()
    asyncio.run(scenario())


def test_shutdown_sends_the_decisions_still_waiting(redis_server):
    async def scenario():
        shared = _shared(redis_server, flush_interval="30s")
        await shared.start()
        shared.publish(dict.fromkeys(_ids(10), False))
        await shared.shutdown()
        assert _counter(shared, "published_decisions") == 10
    asyncio.run(scenario())
    with redis_server.client() as client:
        assert client.dbsize() == 10


def test_the_first_decision_wins_and_a_replica_that_decided_otherwise_follows_it(redis_server):
    async def scenario():
        conflicts: list[tuple[bytes, bool]] = []
        first, second = _shared(redis_server), _shared(redis_server)
        second.on_conflict = lambda trace_id, kept: conflicts.append((trace_id, kept))
        await first.start()
        await second.start()
        kept_first, dropped_first = _ids(1, 1)[0], _ids(1, 2)[0]
        first.publish({kept_first: True, dropped_first: False})
        await _published(first, {kept_first: True, dropped_first: False})
        second.publish({kept_first: False, dropped_first: False})  # disagrees on one, agrees on one
        await _until(lambda: _counter(second, "published_decisions") == 2,
                     message="the second replica's decisions")
        assert conflicts == [(kept_first, True)]
        assert _counter(second, "conflicts") == 1
        for shared in (first, second):
            assert await shared.lookup([kept_first, dropped_first]) == {kept_first: True, dropped_first: False}
            await shared.shutdown()
    asyncio.run(scenario())


def test_redis_killed_mid_run_gives_empty_lookups_waiting_publishes_and_one_warning(redis_server, caplog):
    async def scenario():
        shared = _shared(redis_server)
        await shared.start()
        shared.publish({_ids(1)[0]: True})
        await _published(shared, {_ids(1)[0]: True})

        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="sampler.cluster.redis_state"):
            assert await shared.lookup(_ids(5)) == {}  # the failure itself: no exception
            assert _up(shared) == 0
            started = time.monotonic()
            for _ in range(50):  # while down: no waiting, no exception
                assert await shared.lookup(_ids(5)) == {}
                shared.publish({_ids(1, 7)[0]: False})
            assert time.monotonic() - started < 0.5
            await asyncio.sleep(1.0)  # reconnect attempts fail meanwhile
        warnings = [
            r for r in caplog.records if r.name == "sampler.cluster.redis_state" and r.levelno >= logging.WARNING
        ]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert _counter(shared, "errors", "lookup") == 1
        assert _counter(shared, "errors", "connect") >= 1
        assert _counter(shared, "dropped_decisions", "unavailable") == 0
        assert shared.health()["waiting_decisions"] == 1  # one id, decided 50 times, waits for Redis
        started = time.monotonic()
        await shared.shutdown()  # down: nothing to wait for
        assert time.monotonic() - started < 0.5
        assert _counter(shared, "dropped_decisions", "shutdown") == 1
    asyncio.run(scenario())


def test_redis_restarted_is_found_again_and_decisions_flow_again(redis_server, caplog):
    async def scenario():
        shared = _shared(redis_server)
        await shared.start()
        redis_server.kill()
        assert await shared.lookup(_ids(1)) == {}
        assert _up(shared) == 0
        await asyncio.sleep(0.5)

        redis_server.start()  # same port, empty (no persistence)
        with caplog.at_level(logging.INFO, logger="sampler.cluster.redis_state"):
            await _until(lambda: shared.up, timeout=15, message="reconnect")
        assert any("available again" in r.getMessage() for r in caplog.records)
        assert _up(shared) == 1
        decisions = dict.fromkeys(_ids(5, 3), True)
        shared.publish(decisions)
        await _published(shared, decisions)
        await shared.shutdown()
    asyncio.run(scenario())


def test_an_agent_starts_without_redis_and_connects_when_it_appears(tmp_path):
    server = RedisServer(str(tmp_path))

    async def scenario():
        shared = _shared(server, connection_timeout="1s")
        await shared.start()  # nothing listens: no exception, down
        assert shared.up is False and _up(shared) == 0
        assert await shared.lookup(_ids(1)) == {}
        server.start()
        try:
            await _until(lambda: shared.up, timeout=15, message="first connection")
            shared.publish({_ids(1)[0]: True})
            await _published(shared, {_ids(1)[0]: True})
        finally:
            await shared.shutdown()
            server.kill()
    asyncio.run(scenario())


def test_start_and_shutdown_are_idempotent_and_shutdown_is_safe_without_start(redis_server):
    async def scenario():
        shared = _shared(redis_server)
        await shared.shutdown()
        await shared.start()
        await shared.start()
        assert shared.up
        await shared.shutdown()
        await shared.shutdown()
        assert not shared.up
        shared.publish({_ids(1)[0]: True})  # after shutdown: counted, never raised
        assert await shared.lookup(_ids(1)) == {}
        await shared.start()  # and it can start again
        assert await shared.lookup(_ids(1)) == {}
        await shared.shutdown()
    asyncio.run(scenario())


def test_a_password_is_used_and_never_shown(tmp_path, caplog):
    secret = "s3cret-" + os.urandom(4).hex()
    server = RedisServer(str(tmp_path), args=["--requirepass", secret]).start()

    async def scenario():
        good = SharedDecisions(SharedStateConfig(url=server.url, password=secret))
        in_url = SharedDecisions(SharedStateConfig(url=f"redis://:{secret}@127.0.0.1:{server.port}/0"))
        wrong = SharedDecisions(SharedStateConfig(url=server.url, password="not-" + secret))
        with caplog.at_level(logging.INFO, logger="sampler.cluster.redis_state"):
            for shared in (good, in_url, wrong):
                await shared.start()
        assert good.up and in_url.up and not wrong.up
        assert secret not in str(in_url.health()) and "***" in in_url.health()["url"]
        assert secret not in repr(in_url.config) and secret not in repr(good.config)
        for record in caplog.records:
            assert secret not in record.getMessage() and secret not in str(record.__dict__)
        for shared in (good, in_url, wrong):
            await shared.shutdown()
    try:
        asyncio.run(scenario())
    finally:
        server.kill()


def test_a_redis_that_stops_answering_is_an_outage_bounded_by_operation_timeout(redis_server):
    async def scenario():
        shared = _shared(redis_server, operation_timeout="100ms")
        await shared.start()
        redis_server.process.send_signal(signal.SIGSTOP)  # connections stay open, nothing answers
        try:
            started = time.monotonic()
            assert await shared.lookup(_ids(3)) == {}
            assert time.monotonic() - started < 1.0
            assert _up(shared) == 0
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        await _until(lambda: shared.up, timeout=15, message="recovery")
        await shared.shutdown()
    asyncio.run(scenario())


def test_a_writer_that_fails_leaves_shared_decisions_down_loudly_and_shutdown_clean(redis_server, caplog):
    async def scenario():
        shared = _shared(redis_server)
        await shared.start()

        async def broken(batch):
            raise RuntimeError("a bug in the writer")
        shared._write = broken
        with caplog.at_level(logging.ERROR, logger="sampler.cluster.redis_state"):
            shared.publish({_ids(1)[0]: True})
            await _until(lambda: not shared.up, message="down after the writer failed")
        assert any("stopped working" in record.getMessage() for record in caplog.records)
        await asyncio.sleep(0.5)  # no reconnect brings it back
        assert not shared.up and _up(shared) == 0
        shared.publish({_ids(1)[0]: True})
        assert _counter(shared, "dropped_decisions", "unavailable") == 1
        await shared.shutdown()
    asyncio.run(scenario())


def test_a_value_in_redis_that_is_no_decision_is_not_followed_as_a_drop(redis_server):
    """A key under the prefix holding something else (another writer's value) is no decision: the
    replica keeps its own, as a lookup of it would, and counts the error."""
    async def scenario():
        conflicts: list[tuple[bytes, bool]] = []
        shared = _shared(redis_server)
        shared.on_conflict = lambda trace_id, kept: conflicts.append((trace_id, kept))
        await shared.start()
        trace_id = _ids(1, 3)[0]
        with redis_server.client() as client:
            client.set(f"edgeagent:decision:{trace_id.hex()}", b"true")
        assert await shared.lookup([trace_id]) == {}
        shared.publish({trace_id: True})
        await _until(lambda: _counter(shared, "errors", "publish") == 1, message="the value counted as an error")
        assert conflicts == []
        assert _counter(shared, "conflicts") == 0
        assert _counter(shared, "published_decisions") == 0
        await shared.shutdown()
    asyncio.run(scenario())


def test_a_redis_that_answers_ping_but_stalls_writes_is_one_outage_not_a_log_line_per_probe(redis_server, caplog):
    """CLIENT PAUSE WRITE: PING answers, every SET waits past operation_timeout. Each probe that
    succeeds must not end the outage (and log again) while the operation that failed still does."""
    async def scenario():
        shared = _shared(redis_server, operation_timeout="100ms")
        await shared.start()
        with redis_server.client() as client:
            client.execute_command("CLIENT", "PAUSE", "4000", "WRITE")
        with caplog.at_level(logging.INFO, logger="sampler.cluster.redis_state"):
            for turn in range(60):  # 3 s of decisions while writes stall
                shared.publish({_ids(1, 100 + turn)[0]: True})
                await asyncio.sleep(0.05)
        lines = [r.getMessage() for r in caplog.records if r.name == "sampler.cluster.redis_state"]
        assert len([line for line in lines if "unavailable" in line]) == 1, lines
        assert not [line for line in lines if "available again" in line], lines
        await shared.shutdown()
    asyncio.run(scenario())


@pytest.mark.parametrize("query", ["?decode_responses=true", "?decode_responses=false&socket_timeout=60"])
def test_decisions_are_shared_whatever_the_url_query_says_of_replies_and_timeouts(redis_server, query):
    """redis-py takes options from the url's query over the client's own: text replies never
    equal a decision's bytes, so sharing would silently stop; a long socket_timeout would hold
    lookups past operation_timeout."""
    async def scenario():
        conflicts: list[tuple[bytes, bool]] = []
        first = SharedDecisions(SharedStateConfig(url=redis_server.url + query, flush_interval="2ms"),
                                "tail_sampling/test", Metrics())
        second = _shared(redis_server)
        first.on_conflict = lambda trace_id, kept: conflicts.append((trace_id, kept))
        await first.start()
        await second.start()
        kept, dropped = _ids(1, 1)[0], _ids(1, 2)[0]
        second.publish({kept: True})
        await _published(second, {kept: True})
        first.publish({kept: False, dropped: False})
        await _published(first, {kept: True, dropped: False})
        assert conflicts == [(kept, True)]
        assert _counter(first, "dropped_decisions", "foreign_value") == 0
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert await first.lookup([kept]) == {}
            assert time.monotonic() - started < 2.0
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        for shared in (first, second):
            await shared.shutdown()
    asyncio.run(scenario())


def _in_redis(server: RedisServer, decisions: dict[bytes, bool]) -> dict[bytes, bool]:
    """The decisions Redis holds for these ids, read with a client of the test's own."""
    with server.client() as client:
        values = client.mget([f"edgeagent:decision:{trace_id.hex()}" for trace_id in decisions])
    return {trace_id: value == b"1" for trace_id, value in zip(decisions, values, strict=True) if value is not None}


def test_decisions_made_before_and_during_a_short_stall_reach_redis_once_it_answers_again(redis_server):
    """One operation timing out (Redis paused longer than operation_timeout) marks Redis down, but
    the decisions waiting then, and those made while down, are sent once the probe finds it back."""
    async def scenario():
        shared = _shared(redis_server, operation_timeout="100ms", flush_interval="50ms")
        await shared.start()
        before, during = dict.fromkeys(_ids(20, 1), True), dict.fromkeys(_ids(20, 2), False)
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            shared.publish(before)  # waiting for the writer when the lookup times out
            assert await shared.lookup(_ids(3, 9)) == {}
            assert _up(shared) == 0
            shared.publish(during)
            assert await shared.lookup(_ids(3, 9)) == {}  # down: answered at once
            await asyncio.sleep(0.3)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        await _until(lambda: shared.up, timeout=15, message="recovery")
        await _until(lambda: _in_redis(redis_server, {**before, **during}) == {**before, **during},
                     message="the decisions of the stall in Redis")
        # the pipeline sent during the stall may have been stored when Redis went on, its reply lost to
        # the timeout: the batch is sent again once the probe finds Redis back, and counted then
        await _until(lambda: _counter(shared, "published_decisions") == 40, message="the decisions counted")
        assert _counter(shared, "dropped_decisions", "unavailable") == 0
        await shared.shutdown()
    asyncio.run(scenario())


def test_a_long_outage_keeps_the_newest_decisions_within_the_bound_and_counts_the_rest(redis_server):
    """send_batch_size 10: at most 100 batches, 1,000 decisions, wait while Redis is down; the
    oldest give way (counted) and the newest are sent when it is back."""
    async def scenario():
        shared = _shared(redis_server, operation_timeout="100ms", send_batch_size=10)
        await shared.start()
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            assert await shared.lookup(_ids(1, 9)) == {}
            assert not shared.up
            decisions = {trace_id: index % 3 == 0 for index, trace_id in enumerate(_ids(3000, 4))}
            items = list(decisions.items())
            for start in range(0, len(items), 7):
                shared.publish(dict(items[start:start + 7]))
                assert shared.health()["waiting_decisions"] <= 1000
            assert shared.health()["waiting_decisions"] == 1000
            assert _counter(shared, "dropped_decisions", "overflow") == 2000
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        newest, oldest = dict(items[2000:]), dict(items[:2000])
        await _until(lambda: _in_redis(redis_server, newest) == newest, timeout=15,
                     message="the newest decisions in Redis")
        assert _in_redis(redis_server, oldest) == {}
        await shared.shutdown()
    asyncio.run(scenario())


def test_a_decision_that_waited_longer_than_its_ttl_is_not_sent(redis_server):
    """A decision lives ttl from when it was made: one that waited out an outage longer than that
    would outlive its trace in Redis; it is counted, and one made later is sent."""
    async def scenario():
        shared = _shared(redis_server, operation_timeout="100ms", ttl="2s")
        await shared.start()
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            assert await shared.lookup(_ids(1, 9)) == {}
            stale = dict.fromkeys(_ids(5, 1), True)
            shared.publish(stale)
            await asyncio.sleep(2.1)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        fresh = dict.fromkeys(_ids(5, 2), True)
        shared.publish(fresh)  # most likely before the probe finds Redis back; sent either way
        await _until(lambda: _in_redis(redis_server, fresh) == fresh, timeout=15, message="the fresh decisions")
        assert _in_redis(redis_server, stale) == {}
        assert _counter(shared, "dropped_decisions", "expired") == 5
        with redis_server.client() as client:
            assert 0 < client.pttl(f"edgeagent:decision:{_ids(1, 2)[0].hex()}") <= 2000
        await shared.shutdown()
    asyncio.run(scenario())
