"""Timeouts and retry deadlines that leave out the time the agent's loop did not run (frozen,
suspended): a blocked loop stands in for the frozen process here; tests/e2e/test_freeze.py
stops the real agent."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from edgeagent.runtime import suspensions

pytestmark = pytest.mark.e2e  # each holds or waits on the loop for seconds


async def _answer_during_a_freeze(freeze: float, timeout: float) -> str:
    """Wait for an answer that another thread gives while the loop is held for `freeze` seconds."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    threading.Timer(0.1, lambda: loop.call_soon_threadsafe(answer.set_result, "answered")).start()
    loop.call_soon(time.sleep, freeze)
    async with suspensions.timeout(timeout):
        return await answer


def test_an_answer_that_came_while_the_loop_did_not_run_is_read_when_its_timeout_fell_due_meanwhile():
    async def main() -> str:
        suspensions.install(asyncio.get_running_loop())
        try:
            return await _answer_during_a_freeze(1.6, 0.5)
        finally:
            suspensions.uninstall(asyncio.get_running_loop())

    assert asyncio.run(main()) == "answered"


def test_without_the_heartbeat_the_timeout_is_asyncios_own():
    with pytest.raises(TimeoutError):
        asyncio.run(_answer_during_a_freeze(1.6, 0.5))


def test_a_timeout_with_no_freeze_in_it_fires_on_time():
    async def main() -> float:
        loop = asyncio.get_running_loop()
        suspensions.install(loop)
        started = loop.time()
        try:
            async with suspensions.timeout(0.3):
                await asyncio.sleep(5)
        except TimeoutError:
            return loop.time() - started
        finally:
            suspensions.uninstall(loop)
        return -1.0

    assert 0.29 < asyncio.run(main()) < 0.6


def test_the_time_not_run_since_a_mark_counts_only_the_gap_after_it():
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        suspensions.install(loop)
        try:
            before = loop.time()
            await asyncio.sleep(0.6)
            time.sleep(2.0)  # the loop held: not run
            after = loop.time()
            await asyncio.sleep(0.1)
            return suspensions.lost_since(before), suspensions.lost_since(after)
        finally:
            suspensions.uninstall(loop)

    lost, later = asyncio.run(main())
    assert 1.9 < lost <= 2.05 + suspensions.TICK  # counted from the tick before the loop was held
    assert later < 0.01  # the gap ends when it is noticed, a moment after the loop ran again


def test_the_running_clock_stands_still_while_the_loop_does_not_run_and_never_goes_back():
    async def main() -> tuple[float, float, list[float]]:
        loop = asyncio.get_running_loop()
        suspensions.install(loop)
        try:
            readings = [suspensions.running_time()]
            time.sleep(2.0)  # the loop held: not run
            readings.append(suspensions.running_time())
            for _ in range(5):
                await asyncio.sleep(0.1)
                readings.append(suspensions.running_time())
            return readings[1] - readings[0], readings[-1] - readings[1], readings
        finally:
            suspensions.uninstall(loop)

    frozen, after, readings = asyncio.run(main())
    assert frozen < 1.6  # at most the heartbeat's tick and threshold of the 2 s counted
    assert 0.45 < after < 0.8
    assert readings == sorted(readings)


def test_a_loop_held_again_and_again_by_the_agents_own_work_does_not_stretch_a_timeout_without_end():
    # the loop held 1.4 s of every 1.8 s by work of its own (CPU spent): each late tick counted the
    # whole span since the tick before as time not run, so the gaps met end to end and a timeout
    # never fired while it lasted. Time the process spent on the CPU is time it ran.
    def hold(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            pass

    async def main() -> float:
        loop = asyncio.get_running_loop()
        suspensions.install(loop)
        started = loop.time()
        for cycle in range(4):  # 7 s of it at most
            loop.call_later(0.4 + 1.8 * cycle, hold, 1.4)
        try:
            async with suspensions.timeout(1.5):
                await asyncio.sleep(30)
        except TimeoutError:
            return loop.time() - started
        finally:
            suspensions.uninstall(loop)
        return -1.0

    fired = asyncio.run(main())
    # the holding ends at 7.2 s; held, a starved process runs less than it holds, so the bound is loose
    assert 1.4 < fired < 7.0, f"a 1.5 s timeout fired after {fired:.1f} s"
