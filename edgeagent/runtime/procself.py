"""The process's own /proc files, read through descriptors opened once and kept.

A file opened for each reading could not be read while idle connections held every descriptor
the agent may open: the memory limiter refused every request for as long, and /metrics answered
500 to a scrape whose connection took the last free one. A read at offset 0 makes procfs write
the file anew, so a kept descriptor reads what a fresh open would.
"""

from __future__ import annotations

import os
import threading

_held: dict[str, int] = {}  # file name under /proc/self -> its descriptor
_opening = threading.Lock()  # read from the event loop and from worker threads (tail sampling)
_MOST = 1 << 16  # bytes: status, the longest of them, is under 2 KiB


def read(name: str) -> bytes:
    """/proc/self/`name` as it is now; OSError where it cannot be opened (no /proc)."""
    fd = _held.get(name)
    if fd is None:
        with _opening:
            fd = _held.get(name)
            if fd is None:
                fd = _held[name] = os.open(f"/proc/self/{name}", os.O_RDONLY | os.O_CLOEXEC)
    return os.pread(fd, _MOST, 0)
