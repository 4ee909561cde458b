"""Happy Eyeballs' race: an attempt that hangs holds the next back for the delay only, a winner's
rivals are cancelled or, done too late, discarded (their connections would leak), and when all fail
every error is kept in the order the attempts were given."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeagent.http1 import eyeballs


def test_an_attempt_that_hangs_holds_the_next_back_for_the_delay_only():
    hung: list[asyncio.Task] = []

    async def hangs() -> str:
        hung.append(asyncio.current_task())
        await asyncio.sleep(30)
        return "hung"

    async def answers() -> str:
        return "answered"

    async def main() -> tuple[str, float]:
        started = time.monotonic()
        result = await eyeballs.first_of([hangs, answers], 0.05)
        await asyncio.sleep(0)  # the loser's cancellation lands
        return result, time.monotonic() - started

    result, took = asyncio.run(main())
    assert result == "answered" and took < 1.0
    assert hung[0].cancelled()


def test_a_rival_that_succeeded_as_well_is_discarded():
    discarded: list[str] = []
    gate: list[asyncio.Event] = []

    def attempt(name: str):
        async def run() -> str:
            await gate[0].wait()  # both connect in the same turn of the loop
            return name
        return run

    async def main() -> str:
        gate.append(asyncio.Event())
        asyncio.get_running_loop().call_later(0.05, gate[0].set)
        result = await eyeballs.first_of([attempt("first"), attempt("second")], 0.0, discard=discarded.append)
        await asyncio.sleep(0.05)
        return result

    assert asyncio.run(main()) == "first"
    assert discarded == ["second"]


def test_when_every_attempt_fails_their_errors_come_in_order():
    def fails(message: str, after: float):
        async def run() -> str:
            await asyncio.sleep(after)
            raise OSError(message)
        return run

    with pytest.raises(eyeballs.AllFailed) as failed:
        asyncio.run(eyeballs.first_of([fails("first", 0.1), fails("second", 0.0)], 0.0))
    assert [str(error) for error in failed.value.errors] == ["first", "second"]
