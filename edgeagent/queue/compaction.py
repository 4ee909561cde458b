"""Compaction: LMDB reuses free pages but never shrinks its file, so copy-compact it.

Copy with `compact=True` into scratch space, fsync, then atomically rename over the data
file. A crash at any moment leaves either the old file or the new one, both valid.
Triggers follow otelcol's file_storage: `on_start`, and `on_rebound` (the file grew past
`rebound_needed_threshold_mib`, and the live data fell below `rebound_trigger_threshold_mib`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import lmdb

from edgeagent.queue.environment import MAX_DATABASES

log = logging.getLogger(__name__)
_MIB = 1 << 20


def copy_compacted(env: lmdb.Environment, directory: str, scratch: str | None = None) -> str:
    """Write a compacted, fsync'd copy of `env`; returns its path on the data file's filesystem."""
    work = tempfile.mkdtemp(prefix=".compact-", dir=scratch or directory)
    try:
        env.copy(work, compact=True)
        copied = os.path.join(work, "data.mdb")
        _fsync(copied)
        staged = os.path.join(directory, ".data.mdb.compacted")
        if os.stat(work).st_dev == os.stat(directory).st_dev:
            os.replace(copied, staged)
        else:  # the rename must stay on one filesystem
            shutil.copyfile(copied, staged)
            _fsync(staged)
        os.chmod(staged, 0o600)  # both copies get the umask's mode; the queue stays private
        return staged
    finally:
        shutil.rmtree(work, ignore_errors=True)


def swap_in(staged: str, directory: str) -> None:
    """Atomically replace the data file; the environment must be closed."""
    dir_fd = open_directory(directory)
    try:
        rename_into_place(staged, directory)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CompactionSwapError(RuntimeError):
    """A live compaction's swap failed; the message says which file the queue goes on with."""


def swap_live(staged: str, directory: str, close: Callable[[], None],
              reopen: Callable[[], Exception | None]) -> None:
    """Replace a live environment's data file by its compacted copy: `close` the environment,
    rename, `reopen` it (None when it opened). Whatever fails, the file then at data.mdb (the old
    one before the rename, the compacted one after it) is reopened, or will be by whoever retries
    `reopen`; the error says which."""
    try:
        dir_fd = open_directory(directory)
    except OSError as exc:
        discard(staged)
        raise _failed(directory, exc, "nothing changed; the queue goes on with the uncompacted file") from exc
    close()
    renamed = False
    failed: Exception | None = None
    try:
        rename_into_place(staged, directory)
        renamed = True
        os.fsync(dir_fd)
    except OSError as exc:
        failed = exc
    finally:
        os.close(dir_fd)
    if not renamed:
        discard(staged)
    unopened = reopen()
    outcome = "the compacted file is in place" if renamed else "the uncompacted file is kept"
    if unopened is not None:
        raise _failed(directory, unopened, f"{outcome} but does not open; requests are refused as "
                                           "retryable until it does") from failed or unopened
    if failed is not None:
        raise _failed(directory, failed, f"{outcome} and open") from failed


def _failed(directory: str, cause: BaseException, outcome: str) -> CompactionSwapError:
    return CompactionSwapError(f"live compaction of the queue in {directory} failed at the swap ({cause}); "
                               f"{outcome}")


def open_directory(directory: str) -> int:
    """The descriptor that makes the rename durable: taken before anything changes, so that a
    process out of descriptors fails here with the old file still open."""
    return os.open(directory, os.O_RDONLY)


def rename_into_place(staged: str, directory: str) -> None:
    """The point of no return: once the rename is done, the compacted copy is the queue."""
    os.replace(staged, os.path.join(directory, "data.mdb"))


def discard(staged: str) -> None:
    with contextlib.suppress(OSError):  # left behind, it is removed at the next start or replaced by the next copy
        os.unlink(staged)


def compact(directory: str, scratch: str | None = None) -> tuple[int, int]:
    """Compact an environment that nothing has open; returns the file size (before, after)."""
    data = os.path.join(directory, "data.mdb")
    before = os.path.getsize(data)
    started = time.monotonic()
    env = lmdb.open(directory, max_dbs=MAX_DATABASES, subdir=True)
    try:
        staged = copy_compacted(env, directory, scratch)
    finally:
        env.close()
    swap_in(staged, directory)
    after = os.path.getsize(data)
    log.info("queue compacted", extra={"directory": directory, "bytes_before": before, "bytes_after": after,
                                       "seconds": round(time.monotonic() - started, 3)})
    return before, after


def cleanup_compaction_leftovers(directory: str, scratch: str | None = None) -> int:
    """Remove what a compaction interrupted by a crash left behind (file_storage's cleanup_on_start)."""
    removed = 0
    for place in filter(None, (directory, scratch)):
        if not os.path.isdir(place):
            continue
        for name in os.listdir(place):
            path = os.path.join(place, name)
            if name.startswith(".compact-") and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            elif name == ".data.mdb.compacted":
                os.unlink(path)
                removed += 1
    return removed


def rebound_due(file_bytes: int, live_bytes: int, needed_mib: int, trigger_mib: int) -> bool:
    """otelcol's on_rebound rule: the file grew past `needed`, and the live data shrank below `trigger`."""
    return file_bytes > needed_mib * _MIB and live_bytes < trigger_mib * _MIB


def _fsync(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
