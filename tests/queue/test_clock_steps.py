"""max_age under a wall clock that NTP steps: a gateway without a real-time clock boots at 1970 (or
days behind), the agent queues, then NTP sets the clock forward by years. Records were aged by the
wall clock stamped at enqueue, so the next sweep dropped every record queued before the step as
`max_age`, minutes old as they were, and `queue stats` called them fifty years old.

The store reads a clock the test moves: `advance` is time passing, `step` is NTP setting the wall
clock alone. Real LMDB store on disk, sweeping every 50 ms."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeagent.queue import admin
from edgeagent.queue import store as store_module
from edgeagent.queue.clocksteps import StepWatch
from edgeagent.queue.limits import StorageLimits
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

YEARS_50 = 50 * 365 * 86400.0
BOOT = 100_000.0  # the wall clock of a device that booted without a real-time clock: January 1970
NOW = 1_796_000_000.0  # the right time, as NTP sets it (late 2026)
MAX_AGE = 3600.0
QUEUE = "otlphttp/traces"


class SteppedClock:
    """A wall clock and a clock nobody steps (the store's `Clock`)."""

    def __init__(self, wall: float):
        self._wall = wall
        self._steady = 5000.0

    def wall(self) -> float:
        return self._wall

    def steady(self) -> float:
        return self._steady

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self._wall += seconds
        self._steady += seconds

    def step(self, seconds: float) -> None:
        """NTP steps the wall clock."""
        self._wall += seconds


@pytest.fixture(autouse=True)
def fast_sweeps(monkeypatch):
    monkeypatch.setattr(store_module, "_SWEEP_INTERVAL", 0.05)


class Run:
    """One store on the queue directory, opened and started, with the drops it counted."""

    def __init__(self, directory: str, clock: SteppedClock):
        self.drops: list[tuple[str, int]] = []
        self.store = QueueStore(directory, sync=False, limits=StorageLimits(max_age=MAX_AGE), clock=clock,
                                on_drop=lambda queue, reason, items, records: self.drops.append((reason, records)))
        self.store.open()
        self.store.start()
        self.queue = self.store.queue(QUEUE, Signal.TRACES)

    async def put(self, count: int) -> None:
        for index in range(count):
            await self.store.put([self.queue], f"r{index}".encode(), 1, Signal.TRACES)

    async def sweeps(self, count: int = 3) -> None:
        """Until `count` sweeps ended after the call (the first may have read the clock before it)."""
        for _ in range(count):
            mark = self.store._last_sweep
            started = time.monotonic()
            while self.store._last_sweep == mark and time.monotonic() - started < 5:
                await asyncio.sleep(0.01)
            assert self.store._last_sweep != mark, "no max_age sweep"

    def oldest_age(self) -> float:
        return admin.stats([self.store])["stores"][0]["queues"][QUEUE]["oldest_age_seconds"]

    def ages(self) -> list[float]:
        return [row["age_seconds"] for row in admin.peek([self.store], 0)]

    async def close(self) -> None:
        await self.store.close()


def test_records_queued_before_the_clock_steps_fifty_years_forward_are_kept_at_their_age(tmp_path):
    clock = SteppedClock(BOOT)

    async def scenario() -> tuple[list, int, float, list[float]]:
        run = Run(str(tmp_path), clock)
        try:
            await run.put(3)
            clock.advance(60)
            clock.step(YEARS_50)
            await run.sweeps()
            return run.drops, run.queue.entries, run.oldest_age(), run.ages()
        finally:
            await run.close()

    drops, entries, oldest, ages = asyncio.run(scenario())
    assert drops == [] and entries == 3
    assert oldest == 60.0
    assert ages == [60.0, 60.0, 60.0]


def test_records_on_both_sides_of_a_step_expire_at_their_true_age(tmp_path):
    clock = SteppedClock(BOOT)

    async def scenario() -> list[tuple[list, int, float]]:
        run = Run(str(tmp_path), clock)
        seen = []
        try:
            await run.put(3)
            clock.advance(60)
            clock.step(YEARS_50)
            await run.put(2)  # stamped by the stepped clock
            await run.sweeps()
            seen.append((list(run.drops), run.queue.entries, run.oldest_age()))
            clock.advance(MAX_AGE - 30)  # the first three are 3630 s old, the last two 3570 s
            await run.sweeps()
            seen.append((list(run.drops), run.queue.entries, run.oldest_age()))
            clock.advance(60)  # the last two 3630 s old
            await run.sweeps()
            seen.append((list(run.drops), run.queue.entries, run.oldest_age()))
            return seen
        finally:
            await run.close()

    before, first_expired, all_expired = asyncio.run(scenario())
    assert before == ([], 5, 60.0)
    assert first_expired == ([("max_age", 3)], 2, MAX_AGE - 30)
    assert all_expired == ([("max_age", 3), ("max_age", 2)], 0, 0.0)


def test_a_restart_after_the_step_keeps_the_records_true_age(tmp_path):
    clock = SteppedClock(BOOT)

    async def first_run() -> list:
        run = Run(str(tmp_path), clock)
        try:
            await run.put(3)
            clock.advance(60)
            clock.step(YEARS_50)
            await run.sweeps()
            return run.drops
        finally:
            await run.close()

    async def second_run() -> tuple[list, int, float, list]:
        run = Run(str(tmp_path), clock)
        try:
            clock.advance(60)
            await run.sweeps()
            kept = (list(run.drops), run.queue.entries, run.oldest_age())
            clock.advance(MAX_AGE)
            await run.sweeps()
            return (*kept, run.drops)
        finally:
            await run.close()

    assert asyncio.run(first_run()) == []
    drops, entries, oldest, expired = asyncio.run(second_run())
    assert (drops, entries, oldest) == ([], 3, 120.0)
    assert expired == [("max_age", 3)]


def test_records_of_a_run_whose_clock_was_right_are_not_shifted_by_a_later_runs_step(tmp_path):
    """The device reboots: its clock is at 1970 again until NTP steps it. The step corrects what the
    second run stamped at 1970; what the first run stamped with the right clock keeps its age, and
    expires on time."""
    async def first_run() -> None:
        run = Run(str(tmp_path), SteppedClock(NOW))
        try:
            await run.put(2)
        finally:
            await run.close()

    rebooted = SteppedClock(BOOT)

    async def second_run() -> tuple[list, list[float], list, int]:
        run = Run(str(tmp_path), rebooted)
        try:
            await run.put(3)  # stamped at 1970
            await run.sweeps()
            rebooted.advance(60)
            rebooted.step(NOW + 120 - rebooted.wall())  # NTP: 120 s after the first run's records
            await run.sweeps()
            kept = (list(run.drops), run.ages())
            rebooted.advance(MAX_AGE - 100)  # the first run's records 3620 s old, the second's 3560 s
            await run.sweeps()
            return (*kept, run.drops, run.queue.entries)
        finally:
            await run.close()

    asyncio.run(first_run())
    drops, ages, expired, entries = asyncio.run(second_run())
    assert drops == []
    assert ages == [120.0, 120.0, 60.0, 60.0, 60.0]
    assert expired == [("max_age", 2)] and entries == 3


def test_a_backward_step_drops_nothing_early(tmp_path):
    clock = SteppedClock(NOW)

    async def scenario() -> tuple[list, int, list]:
        run = Run(str(tmp_path), clock)
        try:
            await run.put(2)
            clock.advance(MAX_AGE - 60)
            clock.step(-86400)  # a clock a day fast, set right
            await run.put(2)
            await run.sweeps()
            kept = (list(run.drops), run.queue.entries)
            clock.advance(120)
            await run.sweeps()
            return (*kept, run.drops)
        finally:
            await run.close()

    drops, entries, later = asyncio.run(scenario())
    assert drops == [] and entries == 4
    assert later == []  # kept longer than max_age (their stamps are ahead), never dropped early


def test_records_of_an_earlier_run_whose_clock_was_unset_too_are_kept_after_the_step(tmp_path):
    """An offline gateway power-cycles: every boot starts at 1970, and each run queues. When NTP
    finally steps the clock, the records of the earlier boots were dropped as fifty years old: a
    stamp before this agent existed was made by a clock that was not set, and gets the step too."""
    async def first_run() -> None:
        clock = SteppedClock(BOOT)
        run = Run(str(tmp_path), clock)
        try:
            await run.put(2)
            clock.advance(300)
        finally:
            await run.close()

    rebooted = SteppedClock(BOOT)

    async def second_run() -> tuple[list, int, list[float]]:
        run = Run(str(tmp_path), rebooted)
        try:
            await run.put(3)
            rebooted.advance(60)
            rebooted.step(NOW - rebooted.wall())
            await run.sweeps()
            return run.drops, run.queue.entries, run.ages()
        finally:
            await run.close()

    asyncio.run(first_run())
    drops, entries, ages = asyncio.run(second_run())
    assert drops == [] and entries == 5
    # how long the first boot's records waited before this boot is unknown: they are aged as if
    # queued as this boot began
    assert ages == [60.0] * 5


def test_ntp_slewing_the_clock_is_not_taken_for_a_step():
    """NTP slews an offset under its step threshold, at most 0.5 ms a second: two idle hours between
    two commits (no max_age, so no sweep) gather 3.6 s of it, which must not shift records; a step
    of 2.5 s a second after must."""
    clock = SteppedClock(NOW)
    watch = StepWatch(clock)
    watch.read()
    clock.advance(7200)
    clock.step(3.6)
    slewed = watch.read()
    clock.advance(1)
    clock.step(2.5)
    stepped = watch.read()
    assert slewed == (int((NOW + 7203.6) * 1000), 0)
    assert stepped[1] == 2500


def test_records_queued_with_an_unset_clock_are_kept_when_the_agent_starts_again_after_ntp_set_it(tmp_path):
    """The agent stopped (a restart, an upgrade) after queueing at 1970 and before NTP's step, and
    starts again with the clock set: no step is seen, and the next sweep dropped the whole backlog
    as fifty years old. Their age is unknown: they are aged from when the agent found them, once
    (a later restart keeps that), and expire max_age after it."""
    async def unset_run() -> None:
        clock = SteppedClock(BOOT)
        run = Run(str(tmp_path), clock)
        try:
            await run.put(3)
            clock.advance(60)
        finally:
            await run.close()

    clock = SteppedClock(NOW)

    async def set_run() -> tuple[list, int, list[float]]:
        run = Run(str(tmp_path), clock)
        try:
            await run.put(1)  # a record of this run, stamped by the set clock
            await run.sweeps()
            clock.advance(100)
            return run.drops, run.queue.entries, run.ages()
        finally:
            await run.close()

    async def later_run() -> tuple[list[float], list]:
        run = Run(str(tmp_path), clock)
        try:
            await run.sweeps()
            ages = run.ages()
            clock.advance(MAX_AGE - 50)
            await run.sweeps()
            return ages, run.drops
        finally:
            await run.close()

    asyncio.run(unset_run())
    drops, entries, ages = asyncio.run(set_run())
    assert drops == [] and entries == 4
    assert ages == [100.0] * 4
    ages, expired = asyncio.run(later_run())
    assert ages == [100.0] * 4
    assert expired == [("max_age", 4)]
