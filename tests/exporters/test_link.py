"""The link state every sender of an exporter shares: offline probing, ramp-up, Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from edgeagent.configretry import RetryConfig
from edgeagent.errors import RetryableError, ShutdownError
from edgeagent.exporters.link import OFFLINE_AFTER, Link
from tests.helpers.net import free_port

RETRY = RetryConfig(initial_interval=0.2, max_interval=0.2, randomization_factor=0)
REFUSED = RetryableError("connection refused", connection=True)


def _link(changes: list[bool], concurrency: int = 8) -> Link:
    return Link(concurrency, RETRY, changes.append)


async def _concurrent(link: Link, tries: int, hold: float = 0.05) -> int:
    """How many of `tries` attempts were inside the link at once, at most."""
    inside = peak = 0

    async def one() -> None:
        nonlocal inside, peak
        async with link.attempt():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(hold)
            inside -= 1
    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(tries))), 10)
    return peak


def test_connection_failures_take_the_link_offline_to_a_single_spaced_probe():
    async def scenario() -> None:
        changes: list[bool] = []
        link = _link(changes)
        assert await _concurrent(link, 8) == 8
        for _ in range(OFFLINE_AFTER - 1):
            await link.failed(REFUSED)
        assert link.online is not False
        await link.failed(REFUSED)
        assert changes == [False]
        assert await _concurrent(link, 4, hold=0.01) == 1
        loop = asyncio.get_running_loop()
        await link.failed(REFUSED)  # a failed probe: the next one waits the backoff
        started = loop.time()
        async with link.attempt():
            assert loop.time() - started >= 0.18
    asyncio.run(scenario())


def test_a_returning_link_ramps_up_instead_of_stampeding():
    async def scenario() -> None:
        changes: list[bool] = []
        link = _link(changes)
        for _ in range(OFFLINE_AFTER):
            await link.failed(REFUSED)
        allowed = []
        for _ in range(4):
            await link.succeeded()
            allowed.append(link.allowed)
        assert changes == [False, True]
        assert allowed == [2, 4, 8, 8]
    asyncio.run(scenario())


def test_an_answering_but_busy_upstream_does_not_count_as_offline():
    async def scenario() -> None:
        changes: list[bool] = []
        link = _link(changes)
        for _ in range(OFFLINE_AFTER * 2):
            await link.failed(RetryableError("503 service unavailable"))
        assert changes == [True]
        assert link.allowed == 8
    asyncio.run(scenario())


def test_retry_after_pauses_every_consumer_of_the_exporter():
    async def scenario() -> None:
        link = _link([])
        loop = asyncio.get_running_loop()
        await link.failed(RetryableError("429", retry_after=0.3))
        started = loop.time()
        await _concurrent(link, 3, hold=0)
        assert loop.time() - started >= 0.28
    asyncio.run(scenario())


UNANSWERED = RetryableError("connection refused", unanswered=True)
SLOW = RetryConfig(initial_interval=20, max_interval=60, randomization_factor=0)


async def _listen(port: int) -> asyncio.Server:
    return await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", port)


@pytest.mark.e2e  # takes seconds: waits out real backoffs
def test_an_upstream_that_accepts_connections_again_cuts_the_offline_backoff_short():
    async def scenario() -> None:
        port = free_port()
        link = Link(4, SLOW, [].append, [("127.0.0.1", port)], "otlphttp")
        for _ in range(OFFLINE_AFTER + 1):  # offline, and a failed probe: the next one in 20 s
            await link.failed(UNANSWERED)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        paused = asyncio.ensure_future(link.pause(20, stopping))  # a consumer's own backoff wait
        await asyncio.sleep(2)
        assert not paused.done()
        server = await _listen(port)
        started = loop.time()
        async with link.attempt():
            assert loop.time() - started < 2.5
        await asyncio.wait_for(paused, 1)  # the consumer's wait ended too
        link.close()
        server.close()
    asyncio.run(scenario())


@pytest.mark.e2e  # takes seconds: counts attempts over seconds
def test_a_host_that_accepts_connections_but_fails_requests_is_tried_at_the_backoff_rate():
    async def scenario() -> None:
        port = free_port()
        server = await _listen(port)
        link = Link(4, RetryConfig(initial_interval=1, max_interval=1, randomization_factor=0), [].append,
                    [("127.0.0.1", port)], "otlphttp")
        loop = asyncio.get_running_loop()
        started, attempts = loop.time(), 0
        while loop.time() - started < 6:  # a consumer as the export chain runs it: attempt, fail, back off
            async with link.attempt():
                attempts += 1
            await link.failed(UNANSWERED)
            await link.pause(1, asyncio.Event())
        assert attempts <= 8  # about one a second, not one per accepted connect
        link.close()
        server.close()
    asyncio.run(scenario())


def test_an_upstream_that_answered_is_not_watched():
    async def scenario() -> None:
        link = Link(4, RETRY, [].append, [("127.0.0.1", free_port())], "otlphttp")
        await link.failed(UNANSWERED)
        assert link._watch.running
        await link.failed(RetryableError("upstream answered 502", connection=True))  # a proxy: something listens
        assert not link._watch.running
        await link.failed(UNANSWERED)
        await link.succeeded()
        assert not link._watch.running
    asyncio.run(scenario())


def test_a_timeout_is_watched_only_when_nothing_accepts_connections():
    """A send that timed out may have met a dead host or a hanging upstream: one connect tells them apart."""
    async def scenario() -> None:
        timed_out = RetryableError("upstream did not answer within 5s", connection=True, unanswered=None)
        port = free_port()
        link = Link(4, RETRY, [].append, [("127.0.0.1", port)], "otlphttp")
        await link.failed(timed_out)
        assert link._watch.running  # nothing listens: the upstream is gone
        server = await _listen(port)
        await link.failed(timed_out)
        assert not link._watch.running  # it listens and did not answer in time: its backoff holds
        server.close()
        link.close()
        await link.failed(UNANSWERED)
        assert not link._watch.running  # closed for good: shutting down starts no watch
    asyncio.run(scenario())


def test_a_flapping_port_cuts_the_backoff_short_at_most_once_per_backoff_interval():
    async def scenario() -> None:
        link = Link(4, RetryConfig(initial_interval=3, max_interval=3, randomization_factor=0), [].append,
                    [("127.0.0.1", free_port())], "otlphttp")
        loop = asyncio.get_running_loop()
        await link.failed(UNANSWERED)
        link.close()  # the test plays the watch itself
        taken, until = await link._reached()
        assert taken and until >= loop.time() + 2.9
        await link.failed(UNANSWERED)  # the early attempt failed; the port refuses, then accepts again
        taken, later = await link._reached()
        assert not taken and later == until
    asyncio.run(scenario())


def test_an_outage_longer_than_a_thousand_probes_keeps_the_link_probing():
    """The backoff grew as multiplier ** probes: past ~1000 failed probes (with multiplier 2, about
    1.4 hours at max_interval 5s; with the defaults about 15 hours) the float overflowed, every
    further failure raised OverflowError out of the link, and the sender took it for a bug."""
    retry = RetryConfig(initial_interval=0.001, max_interval=0.001, multiplier=2, randomization_factor=0)

    async def scenario() -> None:
        link = Link(1, retry, lambda online: None)
        for _ in range(OFFLINE_AFTER + 1100):
            await link.failed(REFUSED)
        assert link.online is False
        assert 0 < link.not_before - asyncio.get_running_loop().time() <= 0.001

    asyncio.run(scenario())


def test_a_backoff_begun_after_the_upstream_came_back_ends_at_once():
    """A consumer whose attempt was refused just before the upstream came back began its backoff
    after another consumer's probe had succeeded: it waited the whole backoff (20 s in the
    reconnect test) with the upstream online. Its pause now ends at once when the link came back
    since its attempt began; a pause after an answered failure still waits."""
    async def scenario() -> tuple[float, float]:
        link = Link(4, RetryConfig(initial_interval=20, max_interval=20, randomization_factor=0), lambda online: None)
        stopping = asyncio.Event()
        for _ in range(OFFLINE_AFTER):
            await link.failed(REFUSED)
        assert link.online is False
        began = link.generation  # a consumer's attempt begins, and is refused
        await link.succeeded()  # another consumer's probe gets through: the link is back
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(link.pause(20, stopping, since=began), 5)
        after_back = loop.time() - started
        answered = link.generation
        await link.failed(RetryableError("503 service unavailable"))
        started = loop.time()
        await link.pause(0.3, stopping, since=answered)
        return after_back, loop.time() - started

    after_back, after_503 = asyncio.run(scenario())
    assert after_back < 0.1 and after_503 >= 0.29


def test_an_attempt_waiting_for_its_turn_ends_when_the_agent_stops():
    """An offline link lets one probe through per backoff interval; the other consumers waited for
    their turn through a stop, held it up for the senders' whole grace period and then sent after
    it had begun. Their wait now ends with ShutdownError (they keep their data), and no attempt
    begins once stopped but one whose caller cannot keep its data and whose turn is there."""
    async def scenario() -> float:
        link = Link(4, RetryConfig(initial_interval=20, max_interval=20, randomization_factor=0), lambda online: None)
        stopping = asyncio.Event()
        for _ in range(OFFLINE_AFTER + 1):  # offline, and a failed probe: the next waits 20 s
            await link.failed(REFUSED)
        waiting = asyncio.ensure_future(link.attempt(stopping).__aenter__())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        loop = asyncio.get_running_loop()
        started = loop.time()
        stopping.set()
        await link.interrupt()
        with pytest.raises(ShutdownError):
            await asyncio.wait_for(waiting, 5)
        link.not_before = 0.0
        with pytest.raises(ShutdownError):
            async with link.attempt(stopping):
                pass
        async with link.attempt(stopping, unkept=True):
            assert link.active == 1
        return loop.time() - started

    assert asyncio.run(scenario()) < 0.1
