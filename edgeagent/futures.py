"""Settling an event loop's future from another thread's work."""

from __future__ import annotations

import asyncio
from typing import Any


def settle(future: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    """On the loop (call_soon_threadsafe): the outcome, unless the waiter gave up meanwhile."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
