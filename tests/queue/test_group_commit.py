"""Group commit: puts wait for company only while company is on its way (queue/arrivals.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeagent.queue import grouping
from edgeagent.queue.arrivals import Arrival
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

ROUNDS = 30
BODY = b"x" * 1000


async def _open(path) -> QueueStore:
    store = QueueStore(str(path), sync=False)
    store.open()
    store.start()
    return store


def _put(store: QueueStore, arrival: Arrival | None = None) -> asyncio.Task[None]:
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    return asyncio.ensure_future(store.put([queue], BODY, 1, Signal.TRACES, arrival=arrival))


def test_a_few_clients_after_a_burst_do_not_each_wait_the_whole_linger(tmp_path):
    """After a commit of many puts, two clients in a closed loop (each sends again once answered)
    must not wait out the linger on every request: nobody else is arriving."""
    async def scenario() -> int:
        store = await _open(tmp_path)
        await asyncio.gather(*(_put(store) for _ in range(16)))
        slow = 0
        for _ in range(ROUNDS):
            started = time.monotonic()
            await asyncio.gather(_put(store), _put(store))
            slow += time.monotonic() - started >= grouping.LINGER * 0.9
        await store.close()
        return slow

    slow = asyncio.run(scenario())
    assert slow < ROUNDS // 2, f"{slow} of {ROUNDS} rounds of two puts waited the whole linger"


def test_after_a_burst_a_client_that_sends_now_and_then_is_not_made_to_wait_for_company(tmp_path):
    """Clients answered together long ago are not coming back together: an SDK that exports every
    few seconds must not wait out the linger on each of its next requests after one busy moment."""
    async def scenario() -> int:
        store = await _open(tmp_path)
        await asyncio.gather(*(_put(store) for _ in range(16)))
        slow = 0
        for _ in range(8):
            await asyncio.sleep(grouping.RECENT * 1.5)
            started = time.monotonic()
            await _put(store)
            slow += time.monotonic() - started >= grouping.LINGER * 0.9
        await store.close()
        return slow

    slow = asyncio.run(scenario())
    assert slow <= 1, f"{slow} of 8 lone requests after a burst waited the whole linger"


def test_clients_in_a_closed_loop_share_commits(tmp_path):
    """Four clients that send again as soon as they are answered: their next requests are not read
    yet when the first comes, but they are coming, and one commit takes them all."""
    async def client(store: QueueStore, rounds: int, index: int) -> None:
        for _ in range(rounds):
            await _put(store)
            await asyncio.sleep(0.0004 * (index + 1))  # the answer travels, the next request is read and decoded

    async def scenario() -> tuple[int, int]:
        store = await _open(tmp_path)
        commits = 0
        original = store._commit

        def counting(ops, sweep=False):  # the writer thread's commits, counted
            nonlocal commits
            commits += 1
            original(ops, sweep)

        store._commit = counting  # type: ignore[method-assign]
        await asyncio.gather(*(client(store, 25, index) for index in range(4)))
        await store.close()
        return commits, 100

    commits, puts = asyncio.run(scenario())
    assert commits <= puts // 2, f"{puts} puts of 4 clients in a closed loop took {commits} commits"


def test_a_put_waits_for_a_request_that_is_arriving_and_both_commit_together(tmp_path, monkeypatch):
    monkeypatch.setattr(grouping, "LINGER", 2.0)

    async def scenario() -> tuple[bool, float]:
        store = await _open(tmp_path)
        arriving = Arrival([store.arrivals])  # its body is being read
        first = _put(store)
        await asyncio.sleep(0.2)
        held = not first.done()
        started = time.monotonic()
        await asyncio.gather(first, _put(store, arriving))
        arriving.settle()
        await store.close()
        return held, time.monotonic() - started

    held, waited = asyncio.run(scenario())
    assert held, "the put was committed while another request was arriving"
    assert waited < 1.0, f"the commit waited {waited:.2f} s after the arriving put was queued"


def test_a_request_that_leaves_without_a_put_releases_the_waiting_commit(tmp_path, monkeypatch):
    """A refused or undecodable request must not hold the others' commit until the linger's cap."""
    monkeypatch.setattr(grouping, "LINGER", 2.0)

    async def scenario() -> float:
        store = await _open(tmp_path)
        arriving = Arrival([store.arrivals])
        first = _put(store)
        await asyncio.sleep(0.1)
        started = time.monotonic()
        arriving.settle()
        await first
        await store.close()
        return time.monotonic() - started

    waited = asyncio.run(scenario())
    assert waited < 1.0, f"the commit went {waited:.2f} s after the only arriving request left"


def test_a_commit_waits_for_an_arrival_no_longer_than_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(grouping, "LINGER", 0.3)

    async def scenario() -> float:
        store = await _open(tmp_path)
        stalled = Arrival([store.arrivals])  # a client that never sends the rest of its body
        started = time.monotonic()
        await _put(store)
        waited = time.monotonic() - started
        stalled.settle()
        await store.close()
        return waited

    waited = asyncio.run(scenario())
    assert 0.2 < waited < 1.5, f"the put waited {waited:.2f} s for a stalled arrival; the cap is 0.3 s"


@pytest.mark.parametrize("twice", [False, True])
def test_an_arrival_stops_counting_once_whether_or_not_its_put_came(tmp_path, twice):
    async def scenario() -> list[int]:
        store = await _open(tmp_path)
        arrival = Arrival([store.arrivals])
        counts = [store.arrivals.count]
        if twice:
            await _put(store, arrival)
            counts.append(store.arrivals.count)
        arrival.settle()
        arrival.settle()
        counts.append(store.arrivals.count)
        await store.close()
        return counts

    assert asyncio.run(scenario()) == ([1, 0, 0] if twice else [1, 0])
