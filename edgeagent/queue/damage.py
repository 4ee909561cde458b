"""A data file damaged under a running agent: noted, and salvaged by the next start.

LMDB reports a page that is not what its tree says (a write the flash card lost) as
MDB_CORRUPTED or MDB_PAGE_NOTFOUND to the transaction that reaches it; every later transaction
that reaches it fails again, so acks would fail for ever and the same data go out again and
again. The store then notes the damage in its directory and the agent stops (exit status 1,
for its supervisor to start it again: systemd's Restart=on-failure, a container's restart
policy); the next start moves the file aside and salvages what can be read (home.py).

A cursor stepping from leaf to leaf onto such a page does not fail: it aborts the process in
LMDB's C code, before anything can be noted. So each start also notes that it is running
(`started`) and a stop removes the note (`stopped`). A start that finds the note of an earlier
run in this boot follows a run that ended without a stop, as one that aborted does: it checks
every page of the file first (pagecheck.py), which finds such a page, so the start after an
abort salvages the file instead of aborting again. A start after a power cut (another boot)
is not held up by the check: if the cut damaged a page, the run that meets it ends, and the
start after that checks.
"""

from __future__ import annotations

import contextlib
import os
import time

import lmdb

from edgeagent.queue import pagecheck

DAMAGE_NAME = "edgeagent.damaged"
RUN_NAME = "edgeagent.running"
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def is_damage(exc: BaseException) -> bool:
    """Whether LMDB says a page of the file is not what its tree says."""
    return isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError))


def note(directory: str, problem: str) -> None:
    """Note the damage on disk, for the next start; best effort (the disk may refuse it too)."""
    with contextlib.suppress(OSError):
        _write(os.path.join(directory, DAMAGE_NAME), problem, sync=True)


def known(directory: str) -> str | None:
    """The damage noted by an earlier run, or found now by a check after a run in this boot that
    ended without a stop; None when there is none (or no data file: a note then is spent, the
    damaged file moved away by hand)."""
    data = os.path.join(directory, "data.mdb")
    if not os.path.exists(data):
        salvaged(directory)
        return None
    with contextlib.suppress(FileNotFoundError):
        with open(os.path.join(directory, DAMAGE_NAME), encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() or "damage noted by an earlier run"
    if not _ended_without_stop(directory):
        return None
    return pagecheck.damage(data)


def salvaged(directory: str) -> None:
    """The damaged file was moved aside: the note is spent."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, DAMAGE_NAME))


def started(directory: str) -> None:
    with contextlib.suppress(OSError):
        # not synced: it must outlive the process, which the page cache does, not the boot
        # whole seconds, cut down: a time rounded up could be later than a check made at once
        _write(os.path.join(directory, RUN_NAME), f"{_boot_id()} {int(_since_boot())}", sync=False)


def stopped(directory: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(directory, RUN_NAME))


def _ended_without_stop(directory: str) -> bool:
    """Whether a run in this boot left its note: it ended without a stop. The boot is told by the
    kernel's boot id and by the time since boot, which only grows within one boot (the boot id is
    hidden under systemd's ProcSubset=pid: the time alone then says it, erring toward a check)."""
    try:
        with open(os.path.join(directory, RUN_NAME), encoding="utf-8") as handle:
            boot, began = handle.read().split()
        return boot == _boot_id() and float(began) <= _since_boot()
    except (OSError, ValueError):
        return False


def _since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _boot_id() -> str:
    try:
        with open(_BOOT_ID, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"


def _write(path: str, text: str, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private, as the queue's files
    try:
        os.write(fd, (text + "\n").encode())
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
