"""The queue's files: the directory lock, opening and verifying LMDB, private modes, the reserve.

* Files are private whatever the umask: directories 0700, files 0600 (data.mdb, lock.mdb,
  the lock file, the reserve). Modes are tightened only on files this process owns: nothing
  here ever changes a file's owner.
* The lock file `edgeagent.lock` holds an exclusive flock while an agent owns the queue, and
  says who holds it (`{"pid": ..., "control": <control socket>}`), so that a command that finds
  the queue locked can name the holder and ask it over its control socket instead. A command
  reading a stopped agent's queue holds it shared (`read_lock`): an agent starting meanwhile waits.
* A file we may not read or write is an operator's mistake (a command run as root rewrote it),
  never corruption: `StorageAccessError` names the path, its owner and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import lmdb

from edgeagent.errors import CorruptRecordError, QueueFullError

LOCK_NAME = "edgeagent.lock"
DATA_FILES = ("data.mdb", "lock.mdb")
_BALLAST_NAME = "reserve.ballast"
_BALLAST_BYTES = 2 << 20


class StorageLockedError(RuntimeError):
    """Another process holds the queue; `holder` is what its lock file says ({"pid", "control"})."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        super().__init__(message)
        self.holder = holder or {}


class StorageDamagedError(RuntimeError):
    """The queue's data file does not open; only the agent (which salvages it) may handle it."""


class StorageAccessError(RuntimeError):
    """The queue's files are not ours to read or write: fix the ownership, do not start."""


def private_directory(path: str, mode: int | None = None) -> None:
    """Create `path` and any missing parents as 0700 (makedirs would give the parents the umask's
    mode); tighten `path` when this process owns it. With `mode` (file_storage's
    directory_permissions) missing directories are created with that mode minus the umask, as
    otelcol creates them, and existing ones are left as they are."""
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700 if mode is None else mode)
        if mode is None:
            _tighten(directory, 0o700)
    if mode is None:
        _tighten(path, 0o700)


def _tighten(path: str, mode: int) -> None:
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if info.st_uid == os.geteuid() and info.st_mode & 0o777 != mode:
            os.chmod(path, mode)


def private_files(directory: str) -> None:
    for name in (*DATA_FILES, LOCK_NAME, _BALLAST_NAME):
        _tighten(os.path.join(directory, name), 0o600)


def _owner(path: str) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return "unknown"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def access_error(path: str, exc: BaseException | None = None) -> StorageAccessError:
    user = _user()
    return StorageAccessError(
        f"queue file {path} is owned by {_owner(path)} and this process (user {user}) may not read and write it"
        f"{f' ({exc})' if exc else ''}; give the directory back to the agent's user "
        f"(chown -R {user}: {os.path.dirname(path)}), or run the agent as {_owner(path)}")


def read_refused(directory: str) -> StorageAccessError:
    """A command that only reads, run by a user who may not read the queue: the fix is to run it as
    the queue's owner, never to give the queue to this user (the agent could no longer open it)."""
    head = os.path.abspath(directory)
    while not os.path.exists(head) and os.path.dirname(head) != head:  # the nearest path this user may see
        head = os.path.dirname(head)
    owner = _owner(head)
    return StorageAccessError(f"the queue in {directory} belongs to {owner} and user {_user()} may not read it; "
                              f"run this as {owner} (for example sudo -u {owner} edgeagent ...)")


def has_data(directory: str) -> bool:
    """Whether the queue has a data file to read. One this user may not see or read (a directory on
    the way not theirs) is refused, never taken for a queue not made yet."""
    data = os.path.join(directory, "data.mdb")
    try:
        os.stat(data)
    except FileNotFoundError:
        return False
    except PermissionError:
        raise read_refused(directory) from None
    if not os.access(data, os.R_OK):
        raise read_refused(directory)
    return True


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def check_owner(directory: str) -> None:
    """As root, refuse a directory that belongs to another user: every file written there would be
    root's, and the agent running as that user could no longer open its queue. A directory not made
    yet is judged by its nearest existing parent, which the queue would be created in."""
    if os.geteuid() != 0:
        return
    existing = os.path.abspath(directory)
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        owner = os.stat(existing).st_uid
    except OSError:
        return
    if owner != 0:
        name = _owner(existing)
        where = f"the queue in {directory}" if existing == os.path.abspath(directory) else \
            f"{existing}, where the queue {directory} would be made,"
        raise StorageAccessError(f"{where} belongs to {name}; run this as {name} (for example "
                                 f"sudo -u {name} edgeagent ...) so that its files keep their owner")


def check_access(directory: str) -> None:
    """Refuse files this process cannot write before LMDB touches them."""
    for name in (*DATA_FILES, LOCK_NAME):
        path = os.path.join(directory, name)
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            raise access_error(path)


def is_access_error(exc: BaseException) -> bool:
    if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
        return True
    text = str(exc)
    return "Permission denied" in text or "Operation not permitted" in text


def is_resource_error(exc: BaseException) -> bool:
    """Out of memory for the map or out of descriptors: the process's limits, never damage to the file."""
    if isinstance(exc, lmdb.MemoryError) or getattr(exc, "errno", None) in (errno.ENOMEM, errno.EMFILE, errno.ENFILE):
        return True
    text = str(exc)
    return "Cannot allocate memory" in text or "Too many open files" in text


def lock_directory(directory: str, timeout: float, control: str | None = None) -> IO[str]:
    """Take the agent's exclusive lock on a queue directory: two agents must not drain one queue."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError as exc:
        raise access_error(path, exc) from None
    handle = os.fdopen(fd, "r+")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                holder = lock_holder(directory)
                if holder is None:  # shared, not held: a command reads the queue (read_lock)
                    raise StorageLockedError(_being_read(directory, path)) from None
                raise StorageLockedError(refusal(directory, holder), holder) from None
            time.sleep(0.05)
    _tighten(path, 0o600)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "control": control}))
    handle.flush()
    return handle


def read_lock(directory: str) -> IO[str] | None:
    """A read-only command's shared lock on the queue, held until it closes the queue: an agent
    starting meanwhile waits for it, for LMDB opened without its lock file keeps no note of this
    reader, and the agent's writes would grow and reuse the file under it. Opened read-only: nothing
    is written. None when there is no lock file to share (no agent ever ran there); raises
    StorageLockedError while an agent holds the queue."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        handle = open(path, encoding="utf-8")
    except OSError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        holder = lock_holder(directory) or {}
        raise StorageLockedError(refusal(directory, holder), holder) from None
    return handle


def _being_read(directory: str, lock_path: str) -> str:
    try:
        pid = _flock_pid(os.stat(lock_path).st_ino)
    except OSError:
        pid = None
    return (f"the queue in {directory} is being read by an edgeagent command (process {pid or 'unknown'}, such "
            f"as queue export beside the stopped agent); try again once it has finished")


def lock_holder(directory: str) -> dict[str, Any] | None:
    """Who holds the directory's lock ({"pid", "control"}), or None when no agent does.

    Reads only: the lock file is opened read-only (a shared flock test needs no write access),
    and nothing is created when it is missing."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            note: dict[str, Any] = {}
            with contextlib.suppress(ValueError, OSError):
                read = json.loads(os.pread(fd, 4096, 0) or b"{}")
                note = read if isinstance(read, dict) else {}
            if "pid" not in note:  # written by a version that did not say who it is
                pid = _flock_pid(os.fstat(fd).st_ino)
                if pid is not None:
                    note["pid"] = pid
            return note
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _flock_pid(inode: int) -> int | None:
    """The process holding a flock on the file with `inode`, from /proc/locks (Linux)."""
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF"
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None


def refusal(directory: str, holder: dict[str, Any]) -> str:
    pid = holder.get("pid", "unknown")
    return (f"the queue in {directory} is in use by edgeagent process {pid}; run this command as that process's "
            f"user with the same --state-dir (it then goes through the agent's control socket"
            f"{' ' + str(holder['control']) if holder.get('control') else ''}), or stop that process first")


# Sub-databases per file: one queue per exporter and signal, the stages' tables, meta and dead letters.
# A slot costs LMDB a few dozen bytes per transaction (measured: 1.2 → 1.6 µs per read transaction
# from 64 to 1,024 slots), so size for large graphs sharing one directory.
MAX_DATABASES = 1024


def open_env(directory: str, map_size: int, sync: bool) -> lmdb.Environment:
    env = lmdb.open(directory, map_size=map_size, max_dbs=MAX_DATABASES, sync=sync, metasync=sync, readahead=False,
                    subdir=True, mode=0o600)
    try:
        verify(env, os.path.join(directory, "data.mdb"))
    except (lmdb.Error, CorruptRecordError):
        env.close()
        raise
    private_files(directory)
    return env


def open_readonly(directory: str) -> lmdb.Environment:
    """Open for reading without writing anything: no lock file, no reader table, no new files.

    Only safe while no agent writes (the caller checked `lock_holder`). A damaged file is
    refused here (reading past a truncated file's end would crash): the agent salvages it."""
    data = os.path.join(directory, "data.mdb")
    try:
        env = lmdb.open(directory, max_dbs=MAX_DATABASES, subdir=True, readonly=True, lock=False, create=False,
                        readahead=False)
    except lmdb.Error as exc:
        if is_access_error(exc):
            raise read_refused(directory) from None
        raise StorageDamagedError(_damaged(data, exc)) from None
    try:
        verify(env, data)
    except (lmdb.Error, CorruptRecordError) as exc:
        env.close()
        raise StorageDamagedError(_damaged(data, exc)) from None
    return env


def _damaged(path: str, exc: BaseException) -> str:
    return (f"queue file {path} is damaged ({exc}); start the agent: it moves the file aside and salvages "
            f"every record it can still read")


def verify(env: lmdb.Environment, data_path: str) -> None:
    """Fail now, not later in a consumer, on a truncated file or a broken B-tree root.

    A file shorter than its last page would make reading that page crash the process (the map
    points past the end of the file). Each sub-database's first and last key are looked up,
    which reads its root and both edges of its tree, the pages a start-up and the first lease
    read. Every key is not walked: with small records the leaves are the whole file, and a
    start-up with a backlog would read all of it. A damaged page deeper in a tree is reported
    by LMDB as an error of the read that reaches it."""
    info = env.info()
    page_size = env.stat()["psize"]
    if os.path.getsize(data_path) < (info["last_pgno"] + 1) * page_size:
        raise CorruptRecordError(f"data file is shorter than its {info['last_pgno'] + 1} pages: truncated")
    with env.begin() as txn:
        names = [name for name, _ in txn.cursor()]
        for name in names:
            cursor = txn.cursor(db=env.open_db(name, txn=txn, create=False))
            if cursor.first():
                cursor.last()


def move_aside(directory: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = os.path.join(directory, f"corrupt-{stamp}")
    private_directory(target)
    for name in DATA_FILES:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            os.replace(path, os.path.join(target, name))
    return target


def move_back(moved: str, directory: str) -> None:
    """Undo `move_aside`: the files go back over whatever was made in their place."""
    for name in DATA_FILES:
        path = os.path.join(moved, name)
        if os.path.exists(path):
            os.replace(path, os.path.join(directory, name))
    with contextlib.suppress(OSError):
        os.rmdir(moved)


def out_of_space(exc: Exception, directory: str, need: int) -> bool:
    """A full map, ENOSPC, or an I/O error while the filesystem has no room left.

    LMDB reports a short write as EIO, which is what a full tmpfs or flash card produces."""
    if isinstance(exc, lmdb.MapFullError):
        return True
    text = str(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text or "MDB_MAP_FULL" in text:
        return True
    if "Input/output error" in text or getattr(exc, "errno", None) == errno.EIO:
        try:
            stat = os.statvfs(directory)
        except OSError:
            return False
        return stat.f_bavail * stat.f_frsize < max(need, 1) + (1 << 20)
    return False


class StorageUnwritableError(QueueFullError):
    """The filesystem refuses writes other than for lack of room: `reason` is read_only (EROFS: ext4
    remounted it read-only after an error), io_error (EIO: the card fails) or quota (EDQUOT)."""

    def __init__(self, message: str, reason: str, retry_after: float):
        super().__init__(message, retry_after=retry_after)
        self.reason = reason


def unwritable(exc: BaseException) -> str | None:
    """Why a write failed when the filesystem refuses it (see StorageUnwritableError); None for other
    errors. Called after `out_of_space`, which takes an EIO on a full filesystem for a full disk."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.EROFS or "Read-only file system" in text:
        return "read_only"
    if code == errno.EDQUOT or "Disk quota exceeded" in text:
        return "quota"
    if code == errno.EIO or "Input/output error" in text:
        return "io_error"
    return None


def read_only(directory: str) -> bool:
    """Whether the filesystem holding `directory` is mounted read-only now."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def ballast_path(directory: str) -> str:
    return os.path.join(directory, _BALLAST_NAME)


def ensure_ballast(directory: str) -> None:
    """Keep a small reserve file: on a full filesystem, deleting it gives LMDB room to delete records."""
    path = ballast_path(directory)
    if os.path.exists(path):
        return
    try:
        stat = os.statvfs(directory)
        if stat.f_bavail * stat.f_frsize < 4 * _BALLAST_BYTES:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.posix_fallocate(fd, 0, _BALLAST_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)


def drop_ballast(directory: str) -> bool:
    try:
        os.unlink(ballast_path(directory))
        return True
    except OSError:
        return False


class Gate:
    """Readers share the environment; a live compaction needs it alone (it closes and reopens it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[bool]:
        """Readers kept out, once those inside have left; with `timeout`, whether they left within it."""
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            alone = self._cond.wait_for(lambda: self._readers == 0, timeout)
        try:
            yield alone
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
