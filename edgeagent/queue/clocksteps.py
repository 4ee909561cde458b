"""Record ages that a step of the wall clock does not falsify.

A record's age is the wall clock now minus the wall clock stamped when it was queued (record.py).
A gateway without a real-time clock boots at 1970 (or at the time fake-hwclock saved at its last
shutdown, days behind), the agent starts and queues, and NTP then steps the clock forward by years
or days: every record stamped before the step looks that much older, and max_age would drop it at
the next sweep, though it is minutes old.

Noticing a step
  The writer reads the wall clock and a clock nobody steps (CLOCK_BOOTTIME, which goes on during a
  suspend; CLOCK_MONOTONIC where there is none) together, once per commit, and stamps, sweeps and
  ages with that reading. The wall clock's offset from the other grown by more than STEP_THRESHOLD
  since the last reading is a forward step: NTP slews small offsets (at most 0.5 ms a second, which
  the threshold allows for between two readings) and steps large ones. Every record stamped before
  the step was stamped before that reading, so no stamp falls between the step and its notice.

Shifts
  The records that this process stamped before the step are too old by the step: a `Shift` says
  so, per queue, for the seqs from the first record stamped in this process (`stamped_from`) to
  the queue's next one, with the milliseconds to add. Records of an earlier process are not
  shifted with them: their clock may have been right, and a reboot brings the clock back to 1970
  before NTP steps it again. Unless their stamps say that their clock was not set either (before
  UNSET_BEFORE_MS, when this agent did not exist: an offline gateway that power-cycles boots at
  1970 each time): each run of such records gets the step too, though never so much that its
  newest would be stamped in the future (how long they waited before this process is unknown).
  And when a process starts with the clock set and finds records an earlier one stamped with a
  clock that was not set (NTP stepped it while no agent ran), their age is unknown: each run of
  them is aged from that moment, its newest as if queued then. A note in the meta sub-database,
  written while the clock is not set and removed once such records are shifted, says whether a
  start needs to look, so a start with the clock set reads no backlog for it otherwise.
  A shift only ever makes records younger, so a shift too many keeps records longer, never drops
  one early. A backward step is not corrected: records stamped before it look younger and are
  kept longer, which loses nothing.

  Every age and expiry adds a record's shifts to its stamp (`shift_of`): max_age's sweep, the
  oldest-first choice of `disk_full` evictions, a queue's oldest age, the queue commands' ages.
  The sweep walks from a queue's head and stops at the first record young enough, taking key
  order for time order; shifted stamps keep that order, and where they do not (an earlier run's
  records brought to the present), records behind the stop are kept longer, never dropped early.

On disk
  A queue's shifts are kept in the `meta` sub-database at `clock:<queue name>` (24 bytes an
  entry: first seq, end seq, milliseconds; big-endian), written in the transaction of the commit
  that noticed the step, so a restart after the step keeps them; a shift is forgotten once no
  record it covers is left. The record format is unchanged. A salvaged queue (home.py) starts
  without them, as it starts without its other meta rows.

Not covered: records stamped by a clock that was behind but read a plausible date (fake-hwclock's
restored time, days behind), when NTP stepped it while no agent ran: nothing then says that the
clock was behind, nor by how much.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

STEP_THRESHOLD = 2.0  # seconds the wall clock must jump forward, beyond slewing, to count as a step
SLEW_ALLOWANCE = 0.001  # seconds per second between two readings: twice the kernel's largest slew
UNSET_BEFORE_MS = 1_735_689_600_000  # 2025-01-01: a clock that reads earlier was never set
_ENTRY = struct.Struct(">QQq")
_STEADY = getattr(time, "CLOCK_BOOTTIME", None)


class Clock(Protocol):
    """The store's time sources: the wall clock, which is stepped, and one that is never stepped."""

    def wall(self) -> float:
        """Seconds since the epoch (what records are stamped with)."""
        ...

    def steady(self) -> float:
        """Seconds on a clock that never steps."""
        ...


class SystemClock:
    """The machine's clocks."""

    def wall(self) -> float:
        return time.time()

    def steady(self) -> float:
        return time.clock_gettime(_STEADY) if _STEADY is not None else time.monotonic()


@dataclass(frozen=True)
class Shift:
    """Records `first` <= seq < `end` were stamped `ms` milliseconds too early."""

    first: int
    end: int
    ms: int


Shifts = tuple[Shift, ...]


class StepWatch:
    """Reads the clocks for the writer, and says by how much the wall clock stepped forward since the
    last reading (see the module's note). Writer thread only."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self._last: tuple[float, float] | None = None  # (wall, steady) of the last reading

    def read(self) -> tuple[int, int]:
        """The wall clock now (unix ms), and its forward step since the last reading (ms; 0 for none)."""
        wall, steady = self.clock.wall(), self.clock.steady()
        step = 0
        if self._last is not None:
            last_wall, last_steady = self._last
            jump = (wall - steady) - (last_wall - last_steady)
            if jump > STEP_THRESHOLD + SLEW_ALLOWANCE * max(0.0, steady - last_steady):
                step = int(jump * 1000)
        self._last = (wall, steady)
        return int(wall * 1000), step


def shift_of(shifts: Sequence[Shift], seq: int) -> int:
    """Milliseconds to add to the stamp of record `seq`."""
    return sum(shift.ms for shift in shifts if shift.first <= seq < shift.end)


def added(shifts: Shifts, first: int, end: int, ms: int) -> Shifts:
    """`shifts` with records `first` <= seq < `end` shifted by `ms` more."""
    if end <= first or ms <= 0:
        return shifts
    if shifts and (shifts[-1].first, shifts[-1].end) == (first, end):
        return (*shifts[:-1], Shift(first, end, shifts[-1].ms + ms))
    return (*shifts, Shift(first, end, ms))


def pruned(shifts: Shifts, head: int | None) -> Shifts:
    """The shifts that still cover a record, the queue's first being `head` (None: it is empty)."""
    return tuple(shift for shift in shifts if head is not None and shift.end > head)


def earlier_unset(stamps: Iterable[tuple[int, int]], shifts: Shifts, step_ms: int, now_ms: int) -> Shifts:
    """`shifts` with the step added to the runs of records, of the `(seq, stamp)` given (an earlier
    process's, in key order), stamped by a clock that was not set: at most as much as brings the
    newest of a run to `now_ms`."""
    runs: list[list[int]] = []  # [first, end, newest stamp]
    last_unset = False
    for seq, stamp in stamps:
        if not stamp:  # a record whose header does not decode
            continue
        stamp += shift_of(shifts, seq)
        unset = stamp < UNSET_BEFORE_MS
        if unset and last_unset:
            runs[-1][1:] = [seq + 1, max(runs[-1][2], stamp)]
        elif unset:
            runs.append([seq, seq + 1, stamp])
        last_unset = unset
    for first, end, newest in runs:
        shifts = added(shifts, first, end, min(step_ms, now_ms - newest))
    return shifts


def pack(shifts: Shifts) -> bytes:
    return b"".join(_ENTRY.pack(shift.first, shift.end, shift.ms) for shift in shifts)


def unpack(value: bytes | memoryview | None) -> Shifts:
    """The shifts stored at a queue's `clock:` key; none for no value (or one cut short)."""
    if not value:
        return ()
    data = bytes(value)
    return tuple(Shift(*_ENTRY.unpack_from(data, offset))
                 for offset in range(0, len(data) - _ENTRY.size + 1, _ENTRY.size))
