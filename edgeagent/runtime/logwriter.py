"""Output that never holds the agent up: log lines (and the debug exporter's text) are written by
a thread of their own.

A write to stdout or stderr waits while the pipe behind it is full: a log driver (docker's
blocking mode) or journald that reads no more, or slowly. The agent runs one event loop: a line
written there stopped every receiver and sender until the reader came back, and the SIGTERM that
asked it to stop with them (64 kB of lines, then nothing answered). otelcol's zap blocks only
the goroutine that logs.

So lines are handed to a writer thread, one per descriptor, which writes them with os.write:
not through Python's buffered stream, whose lock a thread blocked in a write would still hold
when the interpreter flushes the stream at exit. What waits is bounded (MAX_PENDING bytes): past
that a line is dropped and counted, and once the output takes lines again the writer says how
many it dropped. The first line waiting is not counted, so one longer than the bound is written
all the same (the debug exporter's detailed text of a request of a megabyte is over 4 MiB).
A write that fails (EPIPE: the reader is gone; ENOSPC; EIO) drops its lines the same way;
nothing is retried, so a dead output costs no CPU. At exit (logging.shutdown, or the owner's
close) what is pending gets FLUSH_SECONDS to be written: a stalled output does not hold the exit
longer.

A regular file takes a write at once or fails it (ENOSPC): its lines are written where they are
logged, so that they are in the file, in order, as soon as the call returns (whoever reads the
file next to another sign of the same event sees the line too).
"""

from __future__ import annotations

import logging
import os
import select
import stat
import threading
import time
import traceback
from collections import deque

MAX_PENDING = 4 << 20  # bytes of lines waiting for the output
FLUSH_SECONDS = 2.0

_shared: dict[int, Writer] = {}
_shared_lock = threading.Lock()


class Writer:
    """Writes what it is given to `fd`, in order, from a thread of its own; `write` never waits."""

    def __init__(self, fd: int, name: str):
        self.fd = fd
        self._ready = threading.Condition()
        self._pending: deque[bytes] = deque()
        self._bytes = 0
        self._dropped = 0  # lines lost since the last notice
        self._busy = False
        self._stopping = False
        self._inline = _regular_file(fd)
        self._thread = threading.Thread(target=self._run, name=f"output {name}", daemon=True)
        if not self._inline:
            self._thread.start()

    def write(self, data: bytes) -> None:
        with self._ready:
            if self._inline and not self._stopping:
                dropped, self._dropped = self._dropped, 0
                if not self._write_all(data + _notice(dropped) if dropped else data):
                    self._dropped = dropped + 1
                return
            # the bound is on what waits behind the first line, which may be longer than it (the debug
            # exporter's detailed text of a large request): it holds back a stalled output's backlog
            if self._stopping or (self._pending and self._bytes - len(self._pending[0]) + len(data) > MAX_PENDING):
                self._dropped += 1
                return
            self._pending.append(data)
            self._bytes += len(data)
            self._ready.notify_all()

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until everything given so far is written (or lost), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ready.wait(left)
        return True

    def close(self, timeout: float = FLUSH_SECONDS) -> None:
        """Flush (bounded), stop the thread and close the descriptor."""
        written = self.flush(timeout)
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        if written:
            if self._thread.is_alive():
                self._thread.join(timeout)
            os.close(self.fd)  # a thread still blocked in a write keeps the descriptor (daemon)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._stopping:
                    self._ready.wait()
                if not self._pending:
                    return
                lines = len(self._pending)
                batch = b"".join(self._pending)
                self._pending.clear()
                self._bytes = 0
                dropped, self._dropped = self._dropped, 0
                self._busy = True
            if dropped:
                batch += _notice(dropped)
            try:
                written = self._write_all(batch)
            except Exception:  # unforeseen: these lines are lost, counted as such, and the thread goes on
                written = False
            with self._ready:
                self._busy = False
                if not written:
                    self._dropped += lines + dropped
                self._ready.notify_all()

    def _write_all(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:  # a descriptor another process made non-blocking: wait for room
                waiting = select.poll()  # not select(), which refuses a descriptor above 1023
                waiting.register(self.fd, select.POLLOUT)
                waiting.poll(1000)
            except OSError:
                return False
        return True


def _regular_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _notice(dropped: int) -> bytes:
    return (f"edgeagent: {dropped} line(s) of output were dropped: the output did not take them "
            f"(a full or closed pipe, a full disk)\n").encode()


def shared(fd: int, name: str) -> Writer:
    """The one writer of stdout (1) or stderr (2), shared by the log and the debug exporter."""
    with _shared_lock:
        writer = _shared.get(fd)
        if writer is None:
            writer = _shared[fd] = Writer(fd, name)
        return writer


class Handler(logging.Handler):
    """A logging handler whose lines go through a Writer; it owns the writer of a file it opened."""

    def __init__(self, writer: Writer, owned: bool):
        super().__init__()
        self.writer = writer
        self.owned = owned

    @classmethod
    def for_path(cls, path: str) -> Handler:
        """stdout, stderr, or a file appended to (opened now: an OSError says it cannot be)."""
        if path in ("stdout", "stderr"):
            return cls(shared(1 if path == "stdout" else 2, path), owned=False)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        return cls(Writer(fd, path), owned=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self.writer.write(line.encode("utf-8", "backslashreplace"))

    def handleError(self, record: logging.LogRecord) -> None:
        """logging's own writes to sys.stderr, which may be the output that waits; this one does not."""
        if logging.raiseExceptions:
            text = f"--- Logging error ---\n{traceback.format_exc()}message: {record.msg!r}\n"
            self.writer.write(text.encode("utf-8", "backslashreplace"))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """A file's writer is closed (flushed first, bounded); stdout's and stderr's stay for the rest
        (logging.shutdown flushed them just before)."""
        if self.owned:
            self.writer.close()
        super().close()
