"""Happy Eyeballs: connection attempts started one after another at a short delay, the first to
succeed taken, as Go's dialer races IPv4 300 ms after IPv6 and grpc-go's pick_first starts the
next address 250 ms into a connect.

An attempt starts `delay` after the one before it, or at once when an attempt under way fails
(as RFC 8305 starts the next one); those under way go on meanwhile. The first that succeeds wins and the others are
cancelled; one that succeeded too late is handed to `discard` (its connection closed). When every
attempt fails, `AllFailed` carries their errors in the order the attempts were given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class AllFailed(Exception):
    def __init__(self, errors: Sequence[Exception]):
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = list(errors)


async def first_of(attempts: Sequence[Callable[[], Awaitable[T]]], delay: float,
                   discard: Callable[[T], None] = lambda _: None) -> T:
    """The result of the first of `attempts` to succeed; see the module's note."""
    started: dict[asyncio.Future[T], int] = {}
    errors: dict[int, Exception] = {}
    pending: set[asyncio.Future[T]] = set()
    try:
        while len(started) < len(attempts) or pending:
            if len(started) < len(attempts):
                attempt: asyncio.Future[T] = asyncio.ensure_future(attempts[len(started)]())
                started[attempt] = len(started)
                pending.add(attempt)
            wait = delay if len(started) < len(attempts) else None
            done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for attempt in sorted(done, key=started.__getitem__):
                error = attempt.exception()
                if error is None:
                    done.discard(attempt)
                    _drop(done, discard)
                    return attempt.result()
                if not isinstance(error, Exception):
                    raise error
                errors[started[attempt]] = error
    finally:
        _drop(pending, discard)
    raise AllFailed([errors[index] for index in sorted(errors)])


def _drop(attempts: set[asyncio.Future[T]], discard: Callable[[T], None]) -> None:
    """Cancel the attempts that lost; what one of them made all the same goes to `discard`."""
    def settle(attempt: asyncio.Future[T]) -> None:
        if not attempt.cancelled() and attempt.exception() is None:
            discard(attempt.result())

    for attempt in attempts:
        attempt.cancel()
        attempt.add_done_callback(settle)
