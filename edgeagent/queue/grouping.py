"""When the writer commits: what one commit takes from the operations queued for it, and how
long it waits for more (group commit). store.py's writer thread owns it."""

from __future__ import annotations

import collections
import queue as thread_queue
import time
from collections.abc import Callable

from edgeagent.queue.arrivals import Arrivals
from edgeagent.queue.ops import Wake, WriterOp

MAX_OPS_PER_COMMIT = 1024
LINGER = 0.010  # seconds at most that puts wait for a put that is coming
ENOUGH_TO_COMMIT = 1 << 20  # bytes of puts after which it stops waiting
RECENT = 0.020  # seconds within which clients answered by a commit are expected back
RECENT_COMMITS = 8  # commits over which that is remembered
ACK_LINGER = 0.25  # seconds acks wait for company before they commit


class Grouping:
    """The writer's operation queue (None: stop), and the requests on their way to it."""

    def __init__(self) -> None:
        self.ops: thread_queue.SimpleQueue[WriterOp | None] = thread_queue.SimpleQueue()
        self.arrivals = Arrivals(self._wake)
        self._recent_puts: collections.deque[tuple[float, int]] = collections.deque(maxlen=RECENT_COMMITS)
        self._lingering = False  # the writer waits for an arrival; set and cleared by the writer

    def gather(self, ops: list[WriterOp | None]) -> None:
        """Take every pending operation, and linger briefly so that one commit carries more.

        Each synced commit rewrites several B-tree, free-list and meta pages besides the records
        (30 to 70 KiB here) and costs about half a request's CPU, so fewer, larger commits mean
        less flash wear and more requests per second. Puts wait only while another put is
        coming, at most LINGER and until ENOUGH_TO_COMMIT bytes: while a request is being read
        (`arrivals`: admitted by a receiver, its put not queued yet), or while the commit holds
        fewer puts than there were clients waiting at a commit of the last RECENT seconds;
        clients answered that recently are sending again (in a closed loop they come back
        within a millisecond, but their next request is not yet read). So a lone request is
        never delayed, clients that send now and then never wait for each other, and many
        clients still share few commits. Acks, which nobody waits for, linger up to
        ACK_LINGER unless a put arrives; an ack commit rewrites LMDB's free list, which grows
        as a backlog drains. The price is duplicates after a crash: acks not yet committed are
        sent again."""
        while len(ops) < MAX_OPS_PER_COMMIT:
            try:
                ops.append(self.ops.get_nowait())
            except thread_queue.Empty:
                break
        real = [op for op in ops if op is not None]
        if len(real) < len(ops):
            return
        if not any(op.client_waits for op in real):
            if not any(op.lingers for op in real) or not self._linger(ops, ACK_LINGER, lambda puts: puts == 0):
                return
        now = time.monotonic()
        expected = max((clients for at, clients in self._recent_puts if now - at < RECENT), default=0)
        self._lingering = True  # before the count is read: a request that leaves later wakes the writer
        try:
            puts = self._linger(ops, LINGER, lambda puts: self.arrivals.count > 0 or puts < expected)
        finally:
            self._lingering = False
        # the clients of this round: in this commit, queued behind it, or still being read
        self._recent_puts.append((time.monotonic(), puts + self.ops.qsize() + self.arrivals.count))

    def _linger(self, ops: list[WriterOp | None], linger: float, worth: Callable[[int], bool]) -> int:
        """Take operations while `worth(puts so far)` holds, up to `linger` seconds; the puts taken."""
        deadline = time.monotonic() + linger
        puts = sum(op.client_waits for op in ops if op is not None)
        put_bytes = sum(op.put_bytes for op in ops if op is not None)
        while worth(puts) and len(ops) < MAX_OPS_PER_COMMIT and put_bytes < ENOUGH_TO_COMMIT:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                op = self.ops.get(timeout=remaining)
            except thread_queue.Empty:
                break
            ops.append(op)
            if op is None:
                break
            puts += op.client_waits
            put_bytes += op.put_bytes
        return puts

    def _wake(self) -> None:
        """A request left without a put (loop thread): end a wait for it."""
        if self._lingering:
            self.ops.put(Wake())
