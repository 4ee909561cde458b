"""Where a store's queues live: its one LMDB environment across its life.

`StoreHome` opens the environment (a data file that does not open is moved aside and what can
still be read is salvaged into a fresh one; read-only, it creates and changes no file), opens
its sub-databases, reopens it after a compaction swap that failed, measures it, hands out read
snapshots under the gate, keeps what the filesystem says when it refuses writes (read-only, I/O
errors, quota: `unwritable`), and closes the environment once the reads under way end. `QueueStore` (store.py) is
a `StoreHome` with queues, tables and the writer thread; its design note says how they meet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import lmdb

from edgeagent.errors import CorruptRecordError, RetryableError
from edgeagent.queue import damage, environment, salvage
from edgeagent.queue.environment import Gate
from edgeagent.queue.ops import StoreTable
from edgeagent.queue.reader import DurableQueue, Table

log = logging.getLogger(__name__)

REOPEN_INTERVAL = 1.0  # seconds between tries to open the environment again after a failed swap
# seconds between tries to write while the filesystem refuses writes: the Retry-After clients are given
WRITE_RETRY_INTERVAL = 5.0
_PROBE = b"writable"  # meta key written to find out whether an unwritable filesystem takes writes again
_CLOSE_WAIT = 5.0  # seconds a close waits for reads under way before it leaves the environment open


class StoreHome:
    """One LMDB environment, its sub-databases and its files; see the module's docstring."""

    def __init__(self, directory: str, *, sync: bool, map_size: int, lock_timeout: float,
                 on_corrupt: Callable[[str], None] | None, on_salvage: Callable[[int, int], None] | None,
                 control_socket: str | None, read_only: bool, directory_mode: int | None, recreate: bool,
                 on_damaged: Callable[[str], None] | None = None):
        self.directory = directory
        self.directory_mode = directory_mode  # file_storage's directory_permissions; None: private
        self.recreate = recreate  # a data file that does not open is moved aside and salvaged
        self.sync = sync
        self.map_size = map_size
        self.lock_timeout = lock_timeout
        self.on_corrupt = on_corrupt
        self.on_salvage = on_salvage  # (records salvaged, records lost)
        self.on_damaged = on_damaged  # LMDB found a damaged page while running (damage.py); any thread
        self.damage: str | None = None  # what it found
        self._damage_lock = threading.Lock()
        self.control_socket = control_socket
        self.read_only = read_only  # for commands beside a stopped agent: reads, never writes a file
        self.env: lmdb.Environment | None = None
        self.meta_db = None
        self.deadletter_db = None
        self.queues: dict[str, DurableQueue] = {}
        self.tables: dict[str, Table] = {}
        self.page_size = 4096
        self.pages_in_use = 0  # bytes; owned by the writer
        self.deadletter_entries = 0
        self._unopened: Exception | None = None  # why the environment a failed swap closed does not open again
        self.gate = Gate()
        self._handles = threading.Lock()  # held while sub-databases open: a compaction's swap, a new queue or table
        self._lock_file: IO[str] | None = None
        # the filesystem refuses writes (environment.unwritable): why, as the writer last found; None: it writes
        self.unwritable: str | None = None
        self.unwritable_problem = ""
        self.storage_errors: dict[str, int] = {}  # commits the filesystem refused, by reason
        self._write_tried = 0.0  # time.monotonic() of the last commit the filesystem refused
        self._writable_waiters: list[Callable[[bool], None]] = []  # on the loop: acks waiting for a writable disk

    @property
    def lmdb_env(self) -> lmdb.Environment:
        """The environment, between open() and close(); retryable while a failed swap's reopen is pending."""
        if self.env is None:
            if self._unopened is not None:
                raise self._unavailable()
            raise RuntimeError(f"queue storage in {self.directory} is not open")
        return self.env

    # ---- opening and closing ---------------------------------------------------------------

    def open(self) -> None:
        if self.read_only:
            self._open_read_only()
            return
        environment.check_owner(self.directory)
        environment.private_directory(self.directory, self.directory_mode)
        self._lock_file = environment.lock_directory(self.directory, self.lock_timeout, self.control_socket)
        try:
            self._open_locked()
        except BaseException:  # nothing stays taken: a retry or a reload in this process opens it again
            self._release()
            raise

    def _open_locked(self) -> None:
        environment.check_access(self.directory)
        known = damage.known(self.directory)
        try:
            if known is not None:
                raise CorruptRecordError(known)
            self.env = environment.open_env(self.directory, self.map_size, self.sync)
        except (lmdb.Error, CorruptRecordError) as exc:
            if environment.is_access_error(exc):
                raise environment.access_error(os.path.join(self.directory, "data.mdb"), exc) from None
            if environment.is_resource_error(exc):
                raise  # the process's limits, not damage: the file stays where it is
            self._start_fresh(exc, "is damaged" if known is not None else "does not open")
        damage.started(self.directory)
        self._open_dbs()
        environment.ensure_ballast(self.directory)
        self.page_size = self.lmdb_env.stat()["psize"]
        with self.lmdb_env.begin() as txn:
            self.deadletter_entries = txn.stat(self.deadletter_db)["entries"]
            self.pages_in_use = self.measure_pages(txn)

    def _open_read_only(self) -> None:
        """Open without creating or changing any file: refused while an agent holds the queue (its
        control socket serves the reads then), and holding the lock file shared until closed, so an
        agent starting meanwhile waits; sub-databases not yet created read as empty."""
        self._lock_file = environment.read_lock(self.directory)  # an agent starting meanwhile waits
        try:
            self._open_read_only_locked()
        except BaseException:
            self._release()
            raise

    def _open_read_only_locked(self) -> None:
        if environment.has_data(self.directory):
            self.env = environment.open_readonly(self.directory)
            self.page_size = self.env.stat()["psize"]
        self._open_dbs()
        if self.env is not None and self.deadletter_db is not None:
            with self.env.begin() as txn:
                self.deadletter_entries = txn.stat(self.deadletter_db)["entries"]
                self.pages_in_use = self.measure_pages(txn)

    def sub_database(self, name: bytes) -> Any:
        """Open (create) a sub-database; None when read-only and it does not exist yet."""
        if self.env is None and self._unopened is None:
            return None
        try:
            return self.lmdb_env.open_db(name, create=not self.read_only)
        except lmdb.Error:
            if self.read_only:
                return None
            raise

    def _start_fresh(self, exc: BaseException, why: str = "does not open") -> None:
        """Move a data file that does not open (or is damaged) aside, start a fresh one, and salvage into it
        what can be read."""
        if not self.recreate:
            raise environment.StorageDamagedError(
                f"queue data file {os.path.join(self.directory, 'data.mdb')} {why} ({exc}); "
                "file_storage recreate is false, so the agent does not start: set recreate: true to move the "
                "file aside and salvage what can be read, or move it away yourself") from exc
        moved = environment.move_aside(self.directory)
        try:
            self.env = environment.open_env(self.directory, self.map_size, self.sync)
            found = salvage.Salvage(os.path.join(moved, "data.mdb"))
            written = salvage.restore(self.env, found)
        except BaseException:  # nothing salvaged yet: the damaged file goes back, for the next start to salvage
            self._drop_env()
            environment.move_back(moved, self.directory)
            raise
        damage.salvaged(self.directory)
        lost_records = found.lost + found.salvaged - written
        lost = f"{lost_records} lost" if found.counted else "its index unreadable, so records lost are not counted"
        message = (f"queue data file in {self.directory} {why} ({exc}); moved it to {moved} and started a "
                   f"fresh queue with the {written} records that could still be read ({lost})")
        log.error(message, extra={"salvaged": written, "lost": lost_records})
        if self.on_corrupt:
            self.on_corrupt(message)
        if self.on_salvage:
            self.on_salvage(written, lost_records)

    def _open_dbs(self) -> None:
        self.meta_db = self.sub_database(b"meta")
        self.deadletter_db = self.sub_database(b"deadletter")
        for queue in self.queues.values():
            queue.db = self.sub_database(f"q:{queue.name}".encode())
        for table in self.tables.values():
            table.db = self.sub_database(table.name.encode())

    def _release(self) -> None:
        # a read on a worker thread holds buffers into the map: closed once it ends, or left open to the
        # process's exit when a read holds on (a stream whose client went away) rather than hold a stop
        with self.gate.exclusive(_CLOSE_WAIT) as alone:
            if alone:
                self._drop_env()
            elif self.env is not None:
                log.warning("queue storage closed while a read still holds it; its file stays open until the "
                            "process ends", extra={"directory": self.directory})
                self.env = None
        if self._lock_file is not None:
            if not self.read_only:
                damage.stopped(self.directory)
            self._lock_file.close()
            self._lock_file = None

    # ---- sizes -------------------------------------------------------------------------------

    def file_size(self) -> int:
        try:
            return os.path.getsize(os.path.join(self.directory, "data.mdb"))
        except OSError:
            return 0

    def measure_pages(self, txn: lmdb.Transaction[bytes]) -> int:
        """Bytes of pages in use by every sub-database (free pages excluded)."""
        pages = 0
        names = [name for name, _ in txn.cursor()]
        for name in names:
            try:
                stat = txn.stat(self.lmdb_env.open_db(name, txn=txn, create=False))
            except lmdb.Error:
                continue
            pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        main = self.lmdb_env.stat()
        pages += main["branch_pages"] + main["leaf_pages"] + main["overflow_pages"]
        return pages * self.page_size

    def queue_names(self) -> list[str]:
        """Every queue on disk (its `q:<name>` sub-database), named in the config or not."""
        if self.env is None:  # read-only, and no data file yet
            return []
        with self.reading(None) as txn:
            keys = [bytes(key) for key in txn.cursor().iternext(values=False)]
        return [key[2:].decode("utf-8", "replace") for key in keys if key.startswith(b"q:")]

    # ---- a filesystem that refuses writes ---------------------------------------------------

    def storage_state(self) -> dict[str, str]:
        """What health says of the files: state ok, or read_only, io_error, quota with the error."""
        if self.unwritable is None:
            return {"state": "ok"}
        return {"state": self.unwritable, "problem": self.unwritable_problem}

    def when_writable(self, callback: Callable[[bool], None]) -> None:
        """On the loop: `callback(True)` once a commit goes through again, `callback(False)` at close."""
        self._writable_waiters.append(callback)

    def _wake_writable_waiters(self, writable: bool) -> None:
        waiters, self._writable_waiters = self._writable_waiters, []
        if waiters and not writable:
            log.warning("delivered (or refused for good) data could not be removed from the queue, whose storage "
                        "refuses writes; it is sent again after the next start",
                        extra={"directory": self.directory, "leases": len(waiters)})
        for callback in waiters:
            callback(writable)

    def _refused_writes(self, exc: BaseException, reason: str) -> environment.StorageUnwritableError:
        """On the writer: the filesystem refused a commit. Logged once per episode, counted each time."""
        if self.unwritable is None:
            log.warning("queue storage refuses writes; new data is refused, queued data is still sent and "
                        "removed once the storage takes writes again", extra={"directory": self.directory,
                                                                              "reason": reason, "error": str(exc)})
        self.unwritable, self.unwritable_problem = reason, str(exc)
        self.storage_errors[reason] = self.storage_errors.get(reason, 0) + 1
        self._write_tried = time.monotonic()
        return self._unwritable_error()

    def _unwritable_error(self) -> environment.StorageUnwritableError:
        return environment.StorageUnwritableError(
            f"queue storage in {self.directory} refuses writes ({self.unwritable_problem}); try again later",
            self.unwritable or "io_error", retry_after=WRITE_RETRY_INTERVAL)

    def _write_due(self) -> bool:
        """On the writer: whether to try a commit on a filesystem that refused one. Not before
        WRITE_RETRY_INTERVAL, and not while it is still mounted read-only (nothing is tried then)."""
        if self.unwritable is None:
            return True
        if time.monotonic() - self._write_tried < WRITE_RETRY_INTERVAL:
            return False
        return not environment.read_only(self.directory)

    def _files_elsewhere(self) -> bool:
        """Whether the queue's directory now names other files than those open here: the filesystem
        that refused writes was detached and a checked one mounted in its place (ext4 takes back one it
        found damaged only through umount and fsck). The lock file stands for the files held open."""
        if self._lock_file is None:
            return False
        try:
            held = os.fstat(self._lock_file.fileno())
            named = os.stat(os.path.join(self.directory, environment.LOCK_NAME))
        except OSError:
            return False
        return (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino)

    def _reopen_elsewhere(self) -> None:
        """On the writer: leave the files of the detached filesystem and open those the directory names
        now, lock first, under the gate as a compaction's swap. One that does not open is tried again
        at each pass (`_unopened`), requests refused as retryable meanwhile."""
        log.warning("queue directory mounted again; opening the queue's files there",
                    extra={"directory": self.directory})
        with self.gate.exclusive(), self._handles:
            self._drop_env()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None
            self._relock_and_reopen()

    def _relock_and_reopen(self) -> None:
        try:
            if self._lock_file is None:
                self._lock_file = environment.lock_directory(self.directory, self.lock_timeout, self.control_socket)
        except (OSError, environment.StorageLockedError, environment.StorageAccessError) as exc:
            self._unopened = exc
            return
        self._reopen()

    def _probe(self) -> bool:
        """On the writer, with nothing to commit: write one small record to find out whether the
        filesystem takes writes again (a commit that changes nothing writes nothing)."""
        try:
            with self.lmdb_env.begin(write=True) as txn:
                txn.put(_PROBE, b"", db=self.meta_db)
        except lmdb.Error as exc:
            self._refused_writes(exc, environment.unwritable(exc) or "io_error")
            return False
        return True

    # ---- reads (worker threads) ------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self, table: StoreTable | None = None) -> Iterator[lmdb.Transaction[memoryview]]:
        """A read snapshot, of `table`'s sub-database by default; a live compaction waits until it ends.

        Handles are looked up inside the gate, here or in the caller's block, never before it: a
        compaction closes the environment, and a handle taken before it belongs to the closed one."""
        with self.gate.shared():
            try:
                with self.lmdb_env.begin(db=None if table is None else table.db, buffers=True) as txn:
                    yield txn
            except lmdb.Error as exc:
                if damage.is_damage(exc):
                    raise self.damaged(exc) from exc
                raise

    # ---- a page damaged under a running agent (damage.py) -----------------------------------

    def damaged(self, exc: BaseException) -> RetryableError:
        """Any thread: LMDB met a damaged page. The first time it is noted on disk for the next start,
        logged, and reported (`on_damaged`: the agent stops); the refusal callers pass on. A read-only
        command notes nothing: it writes no file (one of its user's could keep the agent from starting)."""
        with self._damage_lock:
            first = self.damage is None
            if first:
                self.damage = str(exc)
        if first:
            if self.read_only:
                message = (f"queue data file in {self.directory} is damaged ({exc}); the agent stops when it "
                           f"meets the page, and its next start salvages every record it can still read")
            else:
                damage.note(self.directory, self.damage or str(exc))
                message = (f"queue data file in {self.directory} is damaged ({exc}); the agent stops, and its next "
                           f"start moves the file aside and salvages every record it can still read")
            log.error(message)
            if self.on_damaged is not None:
                self.on_damaged(message)
        return RetryableError(f"queue storage in {self.directory} is damaged; try again after the agent restarts",
                              retry_after=WRITE_RETRY_INTERVAL)

    # ---- a compaction's swap: closed, opened again -----------------------------------------

    def _drop_env(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def _reopen(self) -> Exception | None:
        """Open the environment at data.mdb and every handle in it; the error when it does not open,
        which the writer then tries again at each pass."""
        try:
            self.env = environment.open_env(self.directory, self.map_size, self.sync)
            self._open_dbs()
            self._unopened = None
        except (lmdb.Error, OSError, CorruptRecordError) as exc:
            self._drop_env()
            self._unopened = exc
        return self._unopened

    def _unavailable(self) -> RetryableError:
        return RetryableError(f"queue storage in {self.directory} does not open again "
                              f"({self._unopened}); try again later", retry_after=REOPEN_INTERVAL)

    def _reopen_after_failed_swap(self) -> None:
        """On the writer thread: another try at opening the environment a failed swap left closed."""
        with self.gate.exclusive(), self._handles:
            self._relock_and_reopen()
        if self._unopened is None:
            log.info("queue storage opened again", extra={"directory": self.directory})
