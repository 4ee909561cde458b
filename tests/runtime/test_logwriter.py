"""The output thread: a write never waits for the output, what it cannot hold is dropped and said."""

from __future__ import annotations

import os
import threading
import time

from edgeagent.runtime import logwriter


def _read_all(reader: int, until: bytes, timeout: float = 5.0) -> bytes:
    """What came on `reader` until `until` did, or `timeout` passed (read without blocking: a writer
    that died writes nothing, and the test fails rather than waits)."""
    os.set_blocking(reader, False)
    data = b""
    deadline = time.monotonic() + timeout
    while until not in data and time.monotonic() < deadline:
        try:
            data += os.read(reader, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
    return data


def _fill(fd: int) -> int:
    """Fill a pipe to the brim (its reader reads nothing); returns how many bytes that took."""
    os.set_blocking(fd, False)
    filled = 0
    try:
        while True:
            filled += os.write(fd, b"-" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(fd, True)
    return filled


def test_a_stalled_output_holds_no_writer_and_the_lines_it_could_not_take_are_counted(monkeypatch):
    monkeypatch.setattr(logwriter, "MAX_PENDING", 4096)
    reader, writer_fd = os.pipe()
    filled = _fill(writer_fd)
    writer = logwriter.Writer(writer_fd, "test")
    try:
        started = time.monotonic()
        for index in range(200):  # 20 kB, with 4 kB waiting at most
            writer.write(f"{index:099d}\n".encode())
        assert time.monotonic() - started < 1.0
        assert not writer.flush(0.2)  # the pipe is full
        data = _read_all(reader, b"dropped")[filled:]
        writer.write(b"after\n")
        data += _read_all(reader, b"after\n")
        assert writer.flush(2.0)
    finally:
        writer.close()
        os.close(reader)
    lines = data.decode().splitlines()
    kept = [line for line in lines if line.isdigit()]
    assert kept == sorted(kept) and kept[0] == f"{0:099d}"  # in order, from the first
    notice = next(line for line in lines if "dropped" in line)
    assert f"{200 - len(kept)} line(s)" in notice
    assert lines[-1] == "after"


def test_an_output_whose_reader_left_loses_its_lines_at_once():
    reader, writer_fd = os.pipe()
    os.close(reader)
    writer = logwriter.Writer(writer_fd, "test")
    try:
        for _ in range(1000):
            writer.write(b"x" * 100 + b"\n")
        started = time.monotonic()
        assert writer.flush(2.0)  # EPIPE: dropped, nothing retried
        assert time.monotonic() - started < 0.5
    finally:
        writer.close()


def test_lines_to_a_regular_file_are_in_it_when_the_write_returns(tmp_path):
    """A file never holds a write up, so its lines are written where they are logged: a reader that
    saw another sign of the same event (a counter, an answer) found the line not yet written."""
    path = tmp_path / "agent.log"
    writer = logwriter.Writer(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "file")
    try:
        for index in range(2000):
            writer.write(b"line %d\n" % index)
            if index % 100 == 99:
                assert path.read_bytes().endswith(b"line %d\n" % index)
    finally:
        writer.close()
    assert path.read_bytes().count(b"\n") == 2000


def test_a_line_longer_than_the_bound_reaches_an_output_that_takes_it():
    """The bound is on what waits for a stalled output, not on one line: the debug exporter's
    detailed text of a request of a megabyte and more is one write of over 4 MiB, which was dropped
    (said as an output that did not take it) while the pipe's reader read all it was given."""
    reader, writer_fd = os.pipe()
    received: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(reader, 1 << 20):
            received.append(chunk)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    long_line = b"x" * (logwriter.MAX_PENDING + 1) + b"\n"
    writer = logwriter.Writer(writer_fd, "test")
    try:
        writer.write(long_line)
        writer.write(b"after\n")
        assert writer.flush(5.0)
    finally:
        writer.close()
        thread.join(5.0)
        os.close(reader)
    assert b"".join(received) == long_line + b"after\n"


def test_a_non_blocking_output_on_a_high_descriptor_keeps_its_writer_alive():
    # an output another process made non-blocking waits for room; on a descriptor above select()'s
    # 1024 that wait raised ValueError, which ended the thread: every later line was lost, and
    # each flush waited out its whole timeout
    reader, pipe_end = os.pipe()
    high = os.dup2(pipe_end, 1500)
    os.close(pipe_end)
    filled = _fill(high)
    os.set_blocking(high, False)
    writer = logwriter.Writer(high, "test")
    try:
        writer.write(b"waits for room\n")
        time.sleep(0.1)  # the thread meets the full pipe
        data = _read_all(reader, b"waits for room\n", 2.0)[filled:]
        writer.write(b"after\n")
        data += _read_all(reader, b"after\n", 2.0)
        assert writer.flush(2.0)
    finally:
        writer.close()
        os.close(reader)
    assert data.endswith(b"waits for room\nafter\n")
