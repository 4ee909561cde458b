"""Periodic background jobs that outlive their errors: the agent keeps serving, a worker never dies silently.

`every` runs one step of a job every `interval` seconds until cancelled. A step that raises is
counted (`edgeagent_background_errors`, by task), logged on the first failure of a run (later
ones are only counted, so a job failing every second does not flood the log), handed to the
job's `failing` so it can keep a safe state, and the job goes on at its next interval: the
interval is the backoff, as the job's own cadence is what it must keep. The first step that
succeeds again is logged and handed to `failing` as None.

A job that cannot go on lets its exception out of its task instead, and the task's
done-callback marks the agent unhealthy (`Host.component_failed`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

log = logging.getLogger(__name__)

ERRORS = "edgeagent_background_errors"


class Counting(Protocol):
    def count(self, name: str, amount: float, *labels: str) -> None: ...


async def every(interval: float, step: Callable[[], Awaitable[object] | None], task: str,
                fields: Mapping[str, str], counting: Counting | None = None,
                failing: Callable[[Exception | None], None] | None = None) -> None:
    """Run `step` every `interval` seconds until cancelled, whatever it raises (but cancellation)."""
    failures = 0
    while True:
        await asyncio.sleep(interval)
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # noqa: BLE001 - the job goes on; the error is logged and counted
            if counting is not None:
                counting.count(ERRORS, 1, task)
            if not failures:
                log.error("a background task failed; it goes on at its next interval", exc_info=exc,
                          extra={"task": task, **fields, "interval_seconds": interval})
            failures += 1
            if failing is not None:
                failing(exc)
            continue
        if failures:
            log.info("a background task works again", extra={"task": task, **fields, "failures": failures})
            failures = 0
            if failing is not None:
                failing(None)
