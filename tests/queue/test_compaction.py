"""Compaction shrinks the queue file without losing, duplicating or reordering entries."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edgeagent.queue import admin
from edgeagent.queue.api import StageTransaction, StoredRecord
from edgeagent.queue.compaction import rebound_due
from edgeagent.queue.store import DurableQueue, QueueStore
from edgeagent.runtime import supervise
from edgeagent.signals import Signal

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


async def _fill(store: QueueStore, count: int, size: int = 100_000) -> list[bytes]:
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    bodies = [os.urandom(size) for _ in range(count)]
    for body in bodies:  # one at a time keeps the order of the list
        await store.put([queue], body, 1, Signal.TRACES)
    return bodies


async def _drain(store: QueueStore, count: int) -> list[bytes]:
    queue = store.queues["otlphttp/traces"]
    out: list[bytes] = []
    acks = []
    while len(out) < count:
        lease = await queue.lease(max_items=1, max_entries=1)
        if lease is None:
            break
        out.extend(lease.bodies)
        acks.append(queue.ack(lease))  # acks linger to share a commit: wait for them all at once
    await asyncio.gather(*acks)
    return out


@pytest.mark.e2e  # over a second
def test_live_compaction_shrinks_the_file_and_keeps_every_entry_in_order(tmp_path):
    async def scenario() -> None:
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        bodies = await _fill(store, 300)
        assert await _drain(store, 290) == bodies[:290]
        before = store.file_size()
        assert before > 25 * MIB

        queue = store.queues["otlphttp/traces"]
        more = [os.urandom(1000) for _ in range(20)]
        compaction = store.compact_now()
        writes = [store.put([queue], body, 1, Signal.TRACES) for body in more]  # queued behind the compaction
        held = await queue.lease(max_items=1, max_entries=1)  # a lease across the swap stays valid
        assert (await compaction)[1] < before // 10
        await asyncio.gather(*writes)
        assert held.bodies == [bodies[290]]
        queue.release(held)
        assert store.file_size() < before // 10
        await store.close()

        reopened = QueueStore(str(tmp_path))
        reopened.open()
        reopened.start()
        reopened.queue("otlphttp/traces", Signal.TRACES)
        assert reopened.queues["otlphttp/traces"].entries == 30
        assert await _drain(reopened, 30) == bodies[290:] + more
        await reopened.close()

    asyncio.run(scenario())


def test_rebound_compaction_runs_only_after_growth_and_shrink(tmp_path):
    assert not rebound_due(file_bytes=50 * MIB, live_bytes=1 * MIB, needed_mib=100, trigger_mib=10)
    assert not rebound_due(file_bytes=150 * MIB, live_bytes=20 * MIB, needed_mib=100, trigger_mib=10)
    assert rebound_due(file_bytes=150 * MIB, live_bytes=5 * MIB, needed_mib=100, trigger_mib=10)

    async def scenario() -> None:
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        await _fill(store, 120)
        await _drain(store, 120)
        watcher = asyncio.create_task(store.compact_on_rebound(needed_mib=5, trigger_mib=1, interval=0.05))
        for _ in range(100):
            if store.compactions:
                break
            await asyncio.sleep(0.05)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        assert store.compactions == 1
        assert store.file_size() < 1 * MIB
        await store.close()

    asyncio.run(scenario())


def test_compaction_on_start_keeps_the_backlog(tmp_path):
    async def scenario() -> None:
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        bodies = await _fill(store, 100)
        await _drain(store, 95)
        await store.close()
        before = os.path.getsize(tmp_path / "data.mdb")

        reopened = QueueStore(str(tmp_path), compact_on_start=True)
        reopened.open()
        reopened.start()
        reopened.queue("otlphttp/traces", Signal.TRACES)
        await reopened.compacted()
        assert reopened.compactions == 1
        assert os.path.getsize(tmp_path / "data.mdb") < before // 5
        assert await _drain(reopened, 5) == bodies[95:]
        await reopened.close()

    asyncio.run(scenario())


def test_a_compaction_stopped_before_its_copy_ends_leaves_the_queue_as_it_was(tmp_path):
    """A stop (SIGTERM) waited for the whole copy of the queue; given up, it must leave no partial copy."""
    async def scenario() -> None:
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        bodies = await _fill(store, 60)
        await _drain(store, 50)
        await store.close()
        before = os.stat(tmp_path / "data.mdb")

        reopened = QueueStore(str(tmp_path), compact_on_start=True)
        reopened.open()
        reopened.stop_compaction()  # the stop came first: the copy gives up at its first chunk
        reopened.start()
        await reopened.compacted()
        assert (reopened.compactions, reopened.compaction_failures) == (0, 0)
        assert sorted(os.listdir(tmp_path)) == ["data.mdb", "edgeagent.lock", "edgeagent.running", "lock.mdb",
                                                "reserve.ballast"]  # open: queue/damage.py
        assert os.stat(tmp_path / "data.mdb").st_ino == before.st_ino
        reopened.queue("otlphttp/traces", Signal.TRACES)
        assert await _drain(reopened, 11) == bodies[50:]
        await reopened.close()

    asyncio.run(scenario())


def test_cleanup_on_start_removes_what_an_interrupted_compaction_left(tmp_path):
    from edgeagent.queue.compaction import cleanup_compaction_leftovers

    scratch = tmp_path / "scratch"
    (tmp_path / ".compact-abc").mkdir()
    (tmp_path / ".compact-abc" / "data.mdb").write_bytes(b"x")
    (tmp_path / ".data.mdb.compacted").write_bytes(b"x")
    (scratch / ".compact-def").mkdir(parents=True)
    (tmp_path / "data.mdb").write_bytes(b"keep")
    assert cleanup_compaction_leftovers(str(tmp_path), str(scratch)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.mdb", "scratch"]
    assert list(scratch.iterdir()) == []


_ROUNDS = 20  # live compactions while the readers run
_TIMEOUT = 30.0  # seconds a scenario may take, deadlocked or not
_ADDED = 60  # queues a reload adds during the compactions (each one commits to create its sub-database)


async def _race_compactions(store: QueueStore, readers: dict[str, Callable[[], Awaitable[None]]]) -> dict[str, int]:
    """Run each reader in a loop while `_ROUNDS` live compactions swap the environment under it;
    every exception a reader meets fails the test. Returns how often each reader ran."""
    runs = dict.fromkeys(readers, 0)
    errors: list[str] = []
    stop = asyncio.Event()

    async def loop(name: str, read: Callable[[], Awaitable[None]]) -> None:
        while not stop.is_set():
            try:
                await read()
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
            runs[name] += 1
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(loop(name, read)) for name, read in readers.items()]
    try:
        for _ in range(_ROUNDS):
            await store.compact_now()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert store.compactions == _ROUNDS
    assert errors == [], (collections.Counter(error.split(":")[0] for error in errors), errors[0])
    return runs


def test_reads_running_across_live_compactions_use_the_reopened_environment(tmp_path):
    """A read takes its sub-database handle inside the gate: one taken before a compaction
    belongs to the closed environment (lmdb.Error: Database handle belongs to another environment)."""
    async def scenario() -> None:
        store = QueueStore(str(tmp_path), sync=False)  # the race is not about fsync
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        table = store.table("raw:tail_sampling")
        bodies = await _fill(store, 100, size=2000)
        stored = {f"trace-{i:03}".encode(): os.urandom(2000) for i in range(50)}

        def buffer(writer: StageTransaction) -> None:
            for key, body in stored.items():
                writer.put(table, key, Signal.TRACES, body, 1)
        await store.atomic(buffer)
        keys = sorted(stored)

        async def lease() -> None:  # as the sender does: the oldest, given back
            held = await queue.lease(max_items=1)
            assert held is not None and held.bodies == [bodies[held.seqs[0] - 1]]
            queue.release(held)

        async def lease_newest() -> None:
            held = await queue.lease(max_items=1, newest_first=True)
            assert held is not None and held.bodies == [bodies[-1]]
            queue.release(held)

        async def read_records() -> None:  # as tail sampling's _read does
            found, corrupt = await asyncio.to_thread(store.read_records, table, keys)
            assert corrupt == [] and {key: found[key].body for key in found} == stored

        async def scan() -> None:  # as tail sampling's start does
            found = await asyncio.to_thread(lambda: list(store.scan(table, bodies=True)))
            assert [record.key for record in found if isinstance(record, StoredRecord)] == keys

        async def peek() -> None:  # as `edgeagent queue peek` does
            found = await asyncio.to_thread(lambda: list(admin.records(store, queue.name, limit=5)))
            assert [read.body for read in found] == bodies[:5]

        async def dead_letters() -> None:  # as `edgeagent queue dead-letter list` does
            assert await asyncio.to_thread(lambda: list(admin.dead_letters([store]))) == []

        runs = await asyncio.wait_for(_race_compactions(store, {
            "lease": lease, "lease_newest": lease_newest, "read_records": read_records, "scan": scan, "peek": peek,
            "dead_letters": dead_letters}), _TIMEOUT)
        assert min(runs.values()) >= _ROUNDS, runs  # every reader met compactions
        assert await _drain(store, 100) == bodies  # leased exactly as before: all of them, once, in order
        assert queue.entries == 0
        await store.close()

    asyncio.run(scenario())


def test_writes_queued_across_live_compactions_commit_to_the_reopened_environment(tmp_path):
    """Puts and a stage's atomic moves handed to the writer before a compaction are applied after it."""
    async def scenario() -> None:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        table = store.table("raw:tail_sampling")
        bodies: list[bytes] = []
        keys: list[bytes] = []

        async def put() -> None:
            body = os.urandom(2000)
            bodies.append(body)
            await store.put([queue], body, 1, Signal.TRACES)

        async def buffer() -> None:
            key = f"trace-{len(keys):05}".encode()
            keys.append(key)
            await store.atomic(lambda writer: writer.put(table, key, Signal.TRACES, b"x" * 100, 1))

        await asyncio.wait_for(_race_compactions(store, {"put": put, "buffer": buffer}), _TIMEOUT)
        found, corrupt = await asyncio.to_thread(store.read_records, table, keys)
        assert sorted(found) == keys and corrupt == []
        assert await _drain(store, len(bodies)) == bodies
        await store.close()

    asyncio.run(scenario())


async def _add_queues_while_compacting(directory: str) -> None:
    store = QueueStore(directory)  # each new queue commits and syncs: long enough to meet a swap
    store.open()
    store.start()
    added: list[DurableQueue] = []

    async def add() -> None:
        if len(added) < _ADDED:
            added.append(store.queue(f"otlphttp/{len(added)}", Signal.TRACES))

    await asyncio.wait_for(_race_compactions(store, {"add": add}), _TIMEOUT)
    assert len(added) == _ADDED
    body = os.urandom(100)
    await store.put(added, body, 1, Signal.TRACES)
    for queue in added:
        held = await queue.lease(max_items=1)
        assert held is not None and held.bodies == [body]
    await store.close()


@pytest.mark.e2e  # a process of its own
def test_queues_added_during_live_compactions_read_and_write_the_reopened_environment(tmp_path):
    """A reload adds queues on the event loop while the writer thread swaps the environment: each
    new queue's handle must come from the environment that stays open. In a process of its own:
    the two threads opening sub-databases at once deadlocked inside LMDB, which no timeout in the
    process ends."""
    script = ("import asyncio, sys; from tests.queue.test_compaction import _add_queues_while_compacting; "
              "asyncio.run(_add_queues_while_compacting(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=_TIMEOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


class CountingHost:
    def __init__(self) -> None:
        self.counted: list[tuple[str, tuple[str, ...]]] = []

    def count(self, name: str, amount: float, *labels: str) -> None:
        self.counted.append((name, labels))


def test_a_failed_rebound_compaction_is_logged_with_its_directory_counted_and_tried_again(tmp_path, caplog):
    """The compaction's scratch directory gone (a tmpfs remounted, a cleanup job): the failure was
    logged without naming the queue directory, and counted nowhere."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    directory = str(tmp_path / "queue")
    host = CountingHost()

    async def scenario() -> None:
        store = QueueStore(directory, sync=False, compaction_scratch=str(scratch))
        store.open()
        store.start()
        await _fill(store, 120)
        await _drain(store, 120)
        scratch.rmdir()
        watcher = asyncio.create_task(store.compact_on_rebound(needed_mib=5, trigger_mib=1, interval=0.02,
                                                               counting=host))
        try:
            for _ in range(100):
                if len(host.counted) >= 2:
                    break
                await asyncio.sleep(0.02)
            assert not watcher.done()
            assert store.compactions == 0
            scratch.mkdir()
            for _ in range(100):
                if store.compactions:
                    break
                await asyncio.sleep(0.02)
            assert store.compactions == 1
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await store.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert {name for name, _ in host.counted} == {supervise.ERRORS}
    failed = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.__dict__.get("directory") for record in failed] == [directory], "logged once, with the directory"
