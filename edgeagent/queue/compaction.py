"""Compaction: LMDB reuses free pages but never shrinks its file, so copy-compact it.

Copy with `compact=True` into scratch space, fsync, then atomically rename over the data
file. A crash at any moment leaves either the old file or the new one, both valid.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

import lmdb

log = logging.getLogger(__name__)


def compact(directory: str, scratch: str | None = None) -> tuple[int, int]:
    """Compact the environment in `directory` (not open elsewhere in this process); returns (before, after) bytes."""
    data = os.path.join(directory, "data.mdb")
    before = os.path.getsize(data)
    started = time.monotonic()
    # the rename must stay on one filesystem, so the copy lands next to the data file unless told otherwise
    work = tempfile.mkdtemp(prefix=".compact-", dir=scratch or directory)
    try:
        env = lmdb.open(directory, readonly=False, max_dbs=64, subdir=True, lock=True)
        try:
            env.copy(work, compact=True)
        finally:
            env.close()
        copied = os.path.join(work, "data.mdb")
        with open(copied, "rb") as handle:
            os.fsync(handle.fileno())
        if scratch and os.stat(scratch).st_dev != os.stat(directory).st_dev:
            staged = os.path.join(directory, ".data.mdb.compacted")
            shutil.copyfile(copied, staged)
            with open(staged, "rb") as handle:
                os.fsync(handle.fileno())
            copied = staged
        os.replace(copied, data)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    after = os.path.getsize(data)
    log.info("queue compacted", extra={"directory": directory, "bytes_before": before, "bytes_after": after,
                                       "seconds": round(time.monotonic() - started, 3)})
    return before, after
