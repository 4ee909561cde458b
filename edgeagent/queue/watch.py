"""What clients wait for: their records' delivery (`sending_queue.wait_for_result`), and room
in a full queue (`block_on_overflow`, `Room`).

Design note
===========
* A watched record is written and committed like any other (durable first); then the client's
  answer waits for what happens to it. Its outcome is a future the writer of the record made:
  set when the ack that deletes it commits (delivered), failed with the upstream's PermanentError
  when it is dead-lettered, failed with the chain's RetryableError when the retries for its lease
  ran out, and failed with ShutdownError when the agent stops.
* A record whose client was answered with an error, or gave up (its deadline passed, it went
  away), belongs to that client again, as in otelcol, where the caller owns a request whose
  Offer failed: it is removed from the queue when it is not being sent (so the client's retry
  is not a duplicate), or when the lease that holds it gives up. Delivered while its client had
  given up, it is delivered once more by that retry: at least once, never lost silently.
* The outcome is registered on the event loop while the commit that wrote the record is applied
  (store.py `_resolve`), before the loop hears of any later commit; every settlement comes from a
  later commit (the ack's delete, the dead-letter move, the removal), so none can be missed.
* Records read back after a restart have no watcher: their clients got no answer (the agent
  stopped), and they are delivered as any queued record.
Event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edgeagent.errors import ShutdownError


class Watches:
    """The watched records of one queue: seq -> the outcome its client awaits."""

    def __init__(self) -> None:
        self._outcomes: dict[int, asyncio.Future[None]] = {}

    def __contains__(self, seq: int) -> bool:
        return seq in self._outcomes

    def __len__(self) -> int:
        return len(self._outcomes)

    def add(self, seq: int, outcome: asyncio.Future[None], given_up: Callable[[int], None]) -> None:
        """Watch `seq`; `given_up(seq)` runs when its client stops waiting (the outcome is cancelled)."""
        self._outcomes[seq] = outcome
        if outcome.cancelled():
            given_up(seq)
        else:
            outcome.add_done_callback(lambda done: given_up(seq) if done.cancelled() else None)

    def watched(self, seqs: list[int]) -> list[int]:
        return [seq for seq in seqs if seq in self._outcomes]

    def abandoned(self, seq: int) -> bool:
        """The client of `seq` stopped waiting (its record is still in the queue)."""
        outcome = self._outcomes.get(seq)
        return outcome is not None and outcome.cancelled()

    def forget(self, seq: int) -> None:
        self._outcomes.pop(seq, None)

    def settle(self, seqs: list[int], error: BaseException | None = None) -> None:
        """Tell the clients of `seqs` what became of their records: delivered, or `error`."""
        for seq in seqs:
            outcome = self._outcomes.pop(seq, None)
            if outcome is None or outcome.done():
                continue
            if error is None:
                outcome.set_result(None)
            else:
                outcome.set_exception(error)

    def fail_all(self, error: BaseException) -> None:
        """Answer every client still waiting with `error`; their records stay queued."""
        self.settle(list(self._outcomes), error)


class Room:
    """Commits of one store that freed room (a delete), for clients waiting for it. Event loop only."""

    def __init__(self) -> None:
        self.freed = 0  # commits that freed room so far
        self.closed = False
        self._waiters: list[asyncio.Future[None]] = []

    async def wait(self, seen: int) -> None:
        """Return once a commit after the `seen`-th freed room (at once if one has); ShutdownError
        when the store closes or the agent stops."""
        while self.freed == seen:
            if self.closed:
                raise ShutdownError("the agent is shutting down", retry_after=5.0)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def freed_now(self) -> None:
        self.freed += 1
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
