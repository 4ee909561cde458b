"""Running out of file descriptors for real, as a flood of connections makes a process do."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
from collections.abc import Iterator


@contextlib.contextmanager
def no_free_descriptors(spare: int = 0) -> Iterator[None]:
    """Take every file descriptor the process may open (every open() fails with EMFILE) until the end;
    all but `spare` of them: an accept() that takes the last one, then a dup() that finds none."""
    gc.collect()  # sockets left to the collector close now, not by freeing a descriptor in the middle
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    limit = max(map(int, os.listdir("/proc/self/fd"))) + 16
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        with contextlib.suppress(OSError):
            for _ in range(limit):  # until EMFILE
                held.append(os.open(os.devnull, os.O_RDONLY))
        for _ in range(spare):
            os.close(held.pop())
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
