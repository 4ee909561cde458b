"""A value built from files and built again when one of them changes (certificates, token files).

`get()` compares each file's inode, size and modification time with what it saw last, at most
once per `interval` seconds (0: on every call; a stat() is cheap next to a TLS handshake). When
they differ it builds the value again. A rebuild that fails (a file half written during a
rotation, a key that does not match its certificate yet, a file that could not be opened while
every descriptor was taken) keeps the last good value and logs the file names, once for each
change; it is tried again at the next change, and RETRY_AFTER seconds after it failed: a file
read again at its next change only kept a rotated token unread for good when the open failed.
The first build is not guarded: a component that cannot read its files at start fails to start,
naming them.

Thread-safe: gRPC calls its certificate fetcher from its own threads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_AFTER = 1.0  # seconds after a failed rebuild before files that did not change again are read again


def _stamp(paths: list[str]) -> tuple[tuple[int, int, int, int] | None, ...]:
    stamps: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class Reloading(Generic[T]):
    def __init__(self, paths: Iterable[str | None], build: Callable[[], T], interval: float = 0.0):
        self.paths = [path for path in paths if path]
        self._build = build
        self._interval = interval
        self._lock = threading.Lock()
        self._stamp = _stamp(self.paths)
        self.value: T = build()
        self._checked = time.monotonic()
        self._failed: tuple[tuple[int, int, int, int] | None, ...] | None = None  # the files a rebuild failed on
        self._retry_at = 0.0

    def get(self) -> T:
        """The current value, built again first if a file changed since the last check."""
        if not self.paths or time.monotonic() - self._checked < self._interval:
            return self.value
        with self._lock:
            now = self._checked = time.monotonic()
            stamp = _stamp(self.paths)
            if stamp == self._stamp or (stamp == self._failed and now < self._retry_at):
                return self.value
            try:
                self.value = self._build()
            except Exception as exc:  # keep serving with the last good files
                if stamp != self._failed:
                    log.warning("files changed but could not be loaded; keeping the previous ones and trying "
                                "again", extra={"files": self.paths, "error": f"{type(exc).__name__}: {exc}"})
                self._failed, self._retry_at = stamp, now + RETRY_AFTER
            else:
                self._stamp, self._failed = stamp, None
                log.info("files changed and were loaded again", extra={"files": self.paths})
        return self.value
