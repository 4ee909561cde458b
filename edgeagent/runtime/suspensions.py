"""Time the agent did not run, and timeouts that do not count it.

An IoT gateway that suspends, a VM its host pauses, a container the cgroup freezer freezes, a
process stopped with SIGSTOP: the agent does not run, yet the monotonic clock goes on (all of them
but a suspend of the whole machine). Once it runs again every timer that fell due meanwhile fires
at once: a request whose answer came during the freeze and waits in the socket timed out (its
timeout fired in the same turn of the loop as its answer arrived, and before the task reading it
ran), so it was sent again, and the export chain took the link for a slow one and cut every
request after it smaller; a retry whose `max_elapsed_time` the freeze overran gave up after one
attempt, and the consumer paused for `max_interval` before it tried again.

A heartbeat (a timer every TICK seconds on the agent's loop) notices such a gap: a tick that comes
more than THRESHOLD seconds after its time means the loop did not run in between (the process was
frozen, or the loop was held by something else, which the upstream is no more to blame for). When
in the tick the freeze began is not known, so a gap is counted from the previous tick: up to TICK
too long, which lengthens a timeout a little after a freeze, where too short would let a short
timeout fire at the thaw all the same. The CPU time the process spent meanwhile is left out of it:
a loop held by the agent's own work ran (held 1.4 s of every 1.8 s, every span between two ticks
was counted as not run, and a 1.5 s timeout fired only once the holding stopped). The
gap is kept (the last GAPS of them), logged once, and:

* `lost_since(mark)` says how much of the time since loop time `mark` the agent did not run, so a
  retry's elapsed time leaves out what no upstream can be blamed for (otelcol's own measure is the
  clock: a freeze longer than its `max_elapsed_time` drops the data there);
* `running_time()` is a clock that stands still meanwhile: a tail-sampling trace's decision_wait is
  counted on it, so the spans its clients sent during the freeze (in the sockets when it ends) are
  read before it is decided, as they would have been had the agent run;
* `timeout()` / `timeout_at()` are asyncio's, lengthened by the time the agent did not run while
  they ran: an upstream gets its whole timeout of the agent's running time, and an answer that
  came during a freeze is read, not thrown away (export attempts, the OTLP/HTTP receiver's
  read_timeout, the Redis operations of shared sampling decisions, where a lookup timed out so
  marked Redis down and the traces that fell due were decided without the other replicas').

A gap is also noticed when it is asked about before the heartbeat's late tick has run (the
timers that fell due during a freeze all run in the same turn of the loop, in no order that
helps). Without `install` (a unit test's loop, a CLI verb) nothing is measured and every
timeout is asyncio's own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from types import TracebackType

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between two heartbeats
THRESHOLD = 1.0  # seconds a heartbeat may be late before the time counts as not run
GAPS = 256  # gaps kept; a retry or timeout looks back at most minutes
_EARLY = 1e-6  # a timeout's check runs this much before its deadline, so before the timeout itself


class Heartbeat:
    """The gaps of one loop: spans of loop time during which it did not run."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._last = loop.time()
        self._cpu = time.process_time()  # the process's CPU seconds at the last tick
        self.gaps: collections.deque[tuple[float, float]] = collections.deque(maxlen=GAPS)
        self.lost = 0.0  # seconds not run since install
        self._running = 0.0  # the last running time read
        self._handle: asyncio.TimerHandle | None = loop.call_later(TICK, self._tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self.notice()
        self._cpu = time.process_time()  # read at ticks only: each read is a system call
        self._handle = self._loop.call_later(TICK, self._tick)

    def notice(self) -> None:
        """Take in the gap since the last heartbeat, if there is one."""
        now = self._loop.time()
        began = self._last  # when the freeze began within the tick is unknown: counted from the last tick
        self._last = now
        if now - began - TICK <= THRESHOLD:
            return
        cpu, self._cpu = self._cpu, time.process_time()
        # CPU the process spent since the last tick is time it ran (its own work held the loop): held
        # again and again, gaps counted whole met end to end and a timeout never fired while that lasted
        lost = now - began - (self._cpu - cpu)
        if lost <= THRESHOLD:
            return
        self.gaps.append((now - lost, now))
        self.lost += lost
        log.warning("the agent did not run for a while (the process was stopped or frozen, its host paused, or "
                    "its event loop held); timeouts and deadlines that ran out meanwhile do not count that time",
                    extra={"seconds": round(lost, 3)})

    def running_time(self) -> float:
        """Loop time less the time not run; never less than it read before (a reading taken while
        the heartbeat was late, just before a freeze, lies inside the gap)."""
        self.notice()
        self._running = max(self._running, self._loop.time() - self.lost)
        return self._running

    def lost_since(self, mark: float) -> float:
        self.notice()
        return sum(max(0.0, end - max(began, mark)) for began, end in self.gaps if end > mark)


_heartbeats: dict[asyncio.AbstractEventLoop, Heartbeat] = {}


def install(loop: asyncio.AbstractEventLoop) -> Heartbeat:
    """Measure the gaps of `loop` from now on (idempotent)."""
    heartbeat = _heartbeats.get(loop)
    if heartbeat is None:
        heartbeat = _heartbeats[loop] = Heartbeat(loop)
    return heartbeat


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
    heartbeat = _heartbeats.pop(loop, None)
    if heartbeat is not None:
        heartbeat.close()


def lost_since(mark: float) -> float:
    """Seconds since loop time `mark` that the running loop did not run (0 when not measured)."""
    heartbeat = _heartbeats.get(asyncio.get_running_loop())
    return 0.0 if heartbeat is None else heartbeat.lost_since(mark)


def running_time() -> float:
    """A clock that stands still while the running loop does not run (time.monotonic() where it is not
    measured): what deadlines of the agent's own, as a trace's decision_wait, are counted on."""
    try:
        heartbeat = _heartbeats.get(asyncio.get_running_loop())
    except RuntimeError:
        heartbeat = None
    return time.monotonic() if heartbeat is None else heartbeat.running_time()


class RunningTimeout:
    """asyncio.timeout_at(when), lengthened by the time the loop did not run inside it. Enter it
    with `async with`; it gives asyncio's Timeout, whose `when()` is the deadline as lengthened."""

    def __init__(self, when: float | None):
        self._scope = asyncio.timeout_at(when)
        self._check: asyncio.TimerHandle | None = None
        self._since = 0.0
        self._counted = 0.0

    async def __aenter__(self) -> asyncio.Timeout:
        scope = await self._scope.__aenter__()
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        if loop in _heartbeats:
            self._arm(loop)
        return scope

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None
        await self._scope.__aexit__(kind, error, trace)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        when = self._scope.when()
        self._check = None if when is None else loop.call_at(when - _EARLY, self._due, loop)

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        when = self._scope.when()
        if when is None or self._scope.expired():
            return
        lost = lost_since(self._since)
        if lost > self._counted:  # else the deadline is a real one: the timeout fires
            self._scope.reschedule(when + lost - self._counted)
            self._counted = lost
            self._arm(loop)


def timeout(delay: float | None) -> RunningTimeout:
    """asyncio.timeout(delay) that does not count the time the loop did not run (None: no bound)."""
    return RunningTimeout(None if delay is None else asyncio.get_running_loop().time() + delay)


def timeout_at(when: float | None) -> RunningTimeout:
    """asyncio.timeout_at(when) that does not count the time the loop did not run."""
    return RunningTimeout(when)
