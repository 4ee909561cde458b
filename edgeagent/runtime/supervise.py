"""Periodic background jobs that outlive their errors: the agent keeps serving, a worker never dies silently.

`every` runs one step of a job every `interval` seconds until cancelled. A step that raises is
counted (`edgeagent_background_errors`, by task), logged on the first failure of a run (later
ones are only counted, so a job failing every second does not flood the log), handed to the
job's `failing` so it can keep a safe state, and the job goes on at its next interval: the
interval is the backoff, as the job's own cadence is what it must keep. The first step that
succeeds again is logged and handed to `failing` as None.

A job that cannot go on lets its exception out of its task instead, and the task's
done-callback marks the agent unhealthy (`Host.component_failed`).

`Kept` keeps one task running until its `stop()`: a task that ends otherwise (a cancellation
from elsewhere, an error its body let out, a body that returned) is counted there too, logged
(the first time, then at most every LOG_EVERY seconds) and started again after its delay.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Protocol

log = logging.getLogger(__name__)

ERRORS = "edgeagent_background_errors"
LOG_EVERY = 300.0  # seconds between two logs of the same task ending unexpectedly


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


class Kept:
    """One task running `run()` from `start()` until `stop()`, started again `delay` seconds after
    it ends in any other way (counted in ERRORS by `task`, logged at most every LOG_EVERY seconds)."""

    def __init__(self, run: Callable[[], Coroutine[object, None, None]], task: str, fields: Mapping[str, str],
                 counting: Counting | None, delay: float):
        self.run = run
        self.task = task
        self.fields = fields
        self.counting = counting
        self.delay = delay
        self._task: asyncio.Task[None] | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._logged_at: float | None = None

    @property
    def running(self) -> bool:
        """Started and not stopped: its task runs, or starts again soon."""
        return self._task is not None or self._restart is not None

    def start(self) -> None:
        """Start the task unless it runs (idempotent)."""
        if not self.running:
            self._begin()

    def stop(self) -> asyncio.Task[None] | None:
        """Cancel the task (idempotent); returns it, for the caller to wait for, if it ran."""
        task, self._task = self._task, None
        restart, self._restart = self._restart, None
        if restart is not None:
            restart.cancel()
        if task is not None:
            task.cancel()
        return task

    def _begin(self) -> None:
        self._restart = None
        self._task = asyncio.create_task(self.run(), name=self.task)
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task is not self._task:  # stop() took it
            return
        self._task = None
        error = None if task.cancelled() else task.exception()  # retrieved, logged or not
        if self.counting is not None:
            self.counting.count(ERRORS, 1, self.task)
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.error("a background task stopped unexpectedly; it starts again", exc_info=error, extra={
                "task": self.task, **self.fields, "cancelled": task.cancelled(), "delay_seconds": self.delay})
        self._restart = asyncio.get_running_loop().call_later(self.delay, self._begin)
