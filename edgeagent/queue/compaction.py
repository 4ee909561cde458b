"""Compaction: LMDB reuses free pages but never shrinks its file, so copy-compact it.

Copy with `compact=True` into scratch space, fsync, then atomically rename over the data
file. A crash at any moment leaves either the old file or the new one, both valid.
Triggers follow otelcol's file_storage: `on_start`, and `on_rebound` (the file grew past
`rebound_needed_threshold_mib`, and the live data fell below `rebound_trigger_threshold_mib`).

A copy of a large queue takes seconds (2 GiB: 6 s on a CI disk, minutes on an SD card), longer
than a supervisor waits after its SIGTERM. So a stop gives it up: LMDB writes the copy into a
pipe that a thread empties into the file, a chunk at a time, flushing as it goes (the fsync at
the end stays short); a stop closes the pipe, LMDB's next write fails and its copy ends. Nothing
is renamed then, the partial copy is removed, and the queue goes on with its file as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
from collections.abc import Callable, Iterator

import lmdb

_MIB = 1 << 20
_CHUNK = _MIB  # what the copy moves between two looks at a stop
_SYNC_EVERY = 64 * _MIB  # flushed as it goes: the fsync at the end, which no stop cuts short, stays short


class CompactionStopped(Exception):
    """A stop came during the copy: it was given up, and the queue's file is as it was."""


def copy_compacted(env: lmdb.Environment, directory: str, scratch: str | None, stop: threading.Event) -> str:
    """Write a compacted, fsync'd copy of `env`; returns its path on the data file's filesystem.
    Raises CompactionStopped, having removed what it wrote, once `stop` is set."""
    import tempfile  # here: only a compaction needs it, and importing it cost every start 1 ms

    work = tempfile.mkdtemp(prefix=".compact-", dir=scratch or directory)
    staged = os.path.join(directory, ".data.mdb.compacted")
    try:
        copied = os.path.join(work, "data.mdb")
        renamed = os.stat(work).st_dev == os.stat(directory).st_dev  # the rename must stay on one filesystem
        with _created(copied) as out:  # copied again, a scratch file on another filesystem need not be durable
            _copy_env(env, out, stop, sync=renamed)
        if renamed:
            os.replace(copied, staged)
        else:
            with _created(staged) as out, open(copied, "rb") as source:
                _pour(source.fileno(), out, stop)
        return staged
    except BaseException:
        discard(staged)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_env(env: lmdb.Environment, out: int, stop: threading.Event, sync: bool) -> None:
    """LMDB's compacting copy into `out`, through a pipe a thread empties: when that thread stops
    (asked to, or a write failed) it closes the pipe, and LMDB's next write ends its copy."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # fewer hand-overs; the default pipe works too
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _CHUNK)
    failed: list[BaseException] = []

    def empty() -> None:
        try:
            _pour(read_end, out, stop, sync)
        except BaseException as exc:  # noqa: BLE001 - raised below, on the compacting thread
            failed.append(exc)
        finally:
            os.close(read_end)

    pump = threading.Thread(target=empty, name="compaction-copy", daemon=True)
    try:
        pump.start()  # RuntimeError with no thread to be had (a pids limit): the pipe is closed all the same
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    try:
        env.copyfd(write_end, compact=True)
    except lmdb.Error:
        if not failed:  # else the broken pipe is the pump's doing: its error says why
            raise
    finally:
        os.close(write_end)
        pump.join()
    if failed:
        raise failed[0]


def _pour(source: int, out: int, stop: threading.Event, sync: bool = True) -> None:
    """Copy `source` to its end into `out`, fsync'd if `sync`; CompactionStopped once `stop` is set."""
    unsynced = 0
    while not stop.is_set():
        chunk = os.read(source, _CHUNK)
        if not chunk:
            if sync:
                os.fsync(out)
            return
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view):]
        unsynced += len(chunk)
        if sync and unsynced >= _SYNC_EVERY:
            os.fsync(out)
            unsynced = 0
    raise CompactionStopped("a stop came during the compaction; the queue's file is as it was")


@contextlib.contextmanager
def _created(path: str) -> Iterator[int]:
    """A new private file (the queue stays private whatever the umask), open for writing."""
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(out, 0o600)  # a staged file left behind by a crash keeps its mode otherwise
        yield out
    finally:
        os.close(out)


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

