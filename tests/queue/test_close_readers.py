"""Closing the store while a read runs on a worker thread: the environment stays open until it ends."""

from __future__ import annotations

import asyncio
import threading
import time

from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal


def _close_during_a_read(tmp_path, release_after: float | None) -> tuple[float, list[bytes]]:
    """Seconds store.close() took while a worker thread held a read, let go `release_after` seconds
    after the close began (None: only once the close returned), and what that read then read."""
    held, release = threading.Event(), threading.Event()
    read: list[bytes] = []

    def reader(store: QueueStore, queue) -> None:
        with store.reading(queue) as txn:
            held.set()
            release.wait(5)
            read.extend(bytes(value) for _, value in txn.cursor())  # the map is still there to read

    async def scenario() -> float:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        await store.put([queue], b"x" * 100, 1, Signal.TRACES)
        thread = threading.Thread(target=reader, args=(store, queue))
        thread.start()
        assert held.wait(5)
        if release_after is not None:
            threading.Timer(release_after, release.set).start()
        started = time.monotonic()
        await asyncio.wait_for(store.close(), 5.0)
        closed_after = time.monotonic() - started
        release.set()
        thread.join(5)
        return closed_after

    return asyncio.run(scenario()), read


def test_close_waits_for_a_read_under_way_on_a_worker_thread(tmp_path):
    """The sender reads its batches on worker threads, as buffers into LMDB's map. A stop right
    after start (a SIGTERM as the first lease of a backlog was read) closed the environment under
    such a read, and the agent died of a segmentation fault on its way out."""
    closed_after, read = _close_during_a_read(tmp_path, release_after=0.3)
    assert closed_after >= 0.25  # closed once the read had ended
    assert len(read) == 1


def test_a_read_that_holds_on_does_not_hold_the_close_and_still_reads(tmp_path, monkeypatch):
    """A read suspended for good (a stream whose client went away) does not keep a stop waiting: the
    environment is left open, so that read does not lose its map either."""
    from edgeagent.queue import home

    monkeypatch.setattr(home, "_CLOSE_WAIT", 0.2)
    closed_after, read = _close_during_a_read(tmp_path, release_after=None)
    assert closed_after < 2
    assert len(read) == 1
