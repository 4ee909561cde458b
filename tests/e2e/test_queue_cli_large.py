"""`edgeagent queue purge` and `queue dead-letter replay` on a large backlog, run as an operator runs
them (the real CLI process on the agent's files): memory that does not grow with the backlog, and a
kill -9 part-way through that leaves a consistent queue and every dead letter exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import psutil
import pytest
import zstandard

from edgeagent.queue import deadletter, record
from edgeagent.queue.environment import MAX_DATABASES
from edgeagent.queue.ops import Delete, items_of
from edgeagent.queue.store import DEFAULT_MAP_SIZE, QueueStore
from edgeagent.signals import Signal
from tests.helpers.once import once_per_run

QUEUE = "otlphttp/traces"  # the queue of the default config's exporter
LARGE = 200_000
SMALL = 2_000
_CHUNK = 20_000  # records per transaction while building


def _build(state: Path, records: int, dead: bool) -> None:
    """A stopped agent's state directory whose queue holds `records` small records, or (`dead`)
    whose dead-letter store holds them, each naming the queue it came from."""
    async def scenario() -> None:
        store = QueueStore(str(state / "queue"), sync=False)
        store.open()
        store.start()
        queue = store.queue(QUEUE, Signal.TRACES)
        try:
            noise = random.Random(records).randbytes
            for start in range(0, records, _CHUNK):
                count = min(_CHUNK, records - start)

                def append(writer, start=start, count=count) -> None:
                    for index in range(start, start + count):  # ~200 bytes stored: a gateway's records are larger
                        writer.append(queue, _name(index) + noise(160), 1)
                await store.atomic(append)
                if dead:
                    seqs = list(range(start + 1, start + count + 1))
                    await store.submit(lambda fut, seqs=seqs: Delete(
                        queue, seqs, fut, dead_letter={"queue": QUEUE, "status": 400, "reason": "refused"}))
        finally:
            await store.close()
    asyncio.run(scenario())


class _Built(dict):
    """The state directories built so far in this run, each built when first asked for, by the first
    worker that asks (the others wait for it): a test needs one or two of the four, each of the large
    two is needed by two tests, and the four tests usually run in as many workers."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        super().__init__()
        self.tmp_path_factory = tmp_path_factory

    def __missing__(self, key: tuple[int, bool]) -> Path:
        records, dead = key

        def build(state: Path) -> Path:
            _build(state, records, dead)
            return state

        state = once_per_run(self.tmp_path_factory, f"queue-cli-{records}-{'dead' if dead else 'queued'}", build)
        self[key] = state
        return state


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[tuple[int, bool], Path]:
    """Each built once per run; each test works on a copy."""
    return _Built(tmp_path_factory)


def _copy(built: Path, tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(built, state)
    return state


def _start(state: Path, *command: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeagent", "queue", *command, "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _peak_anonymous_rss(state: Path, *command: str) -> tuple[int, float, dict]:
    """Run a command to its end: the most private memory it held (resident, not file-backed:
    the pages of the queue file it reads are the kernel's cache), its seconds, its answer."""
    started = time.monotonic()
    process = _start(state, *command)
    watched = psutil.Process(process.pid)
    peak = 0
    deadline = started + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            info = watched.memory_info()
        except psutil.NoSuchProcess:
            break
        peak = max(peak, info.rss - info.shared)
        time.sleep(0.01)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    return peak, time.monotonic() - started, json.loads(out)


def _open_readonly_view(state: Path) -> lmdb.Environment:
    """The file as another process sees it while the command writes (LMDB's reader table)."""
    return lmdb.open(str(state / "queue"), map_size=DEFAULT_MAP_SIZE, max_dbs=MAX_DATABASES, readonly=True,
                     readahead=False)


def _entries(env: lmdb.Environment, name: bytes) -> int:
    with env.begin() as txn:
        return int(txn.stat(env.open_db(name, txn=txn, create=False))["entries"])


def _kill_after_first_commit(state: Path, name: bytes, before: int, *command: str) -> None:
    """Start the command, and kill -9 it as soon as a commit of it shows in the file."""
    process = _start(state, *command)
    env = _open_readonly_view(state)
    try:
        deadline = time.monotonic() + 30
        while _entries(env, name) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    finally:
        env.close()


def _reopened(state: Path) -> tuple[dict[str, int], dict[str, int], list[bytes], list[bytes]]:
    """The queue's totals as a restarted agent reads them, the same counted record by record, and
    the bodies in the queue and in the dead-letter store."""
    async def scenario():
        store = QueueStore(str(state / "queue"), sync=False)
        store.open()
        store.start()
        queue = store.queue(QUEUE, Signal.TRACES)
        try:
            kept = {"entries": queue.entries, "items": queue.items, "bytes": queue.bytes}
            counted = {"entries": 0, "items": 0, "bytes": 0}
            queued = []
            with store.lmdb_env.begin() as txn:
                for value in txn.cursor(db=queue.db).iternext(keys=False):
                    counted["entries"] += 1
                    counted["items"] += items_of(value)
                    counted["bytes"] += len(value)
                    queued.append(_body_name(value))
                letters = [_body_name(letter.value) for letter in deadletter.scan(txn, store.deadletter_db)]
            return kept, counted, queued, letters
        finally:
            await store.close()
    return asyncio.run(scenario())


def _name(index: int) -> bytes:
    return b"span %d;" % index


def _body_name(value: bytes) -> bytes:
    body = record.decode_body(value, record.decode_header(value), zstandard.ZstdDecompressor())
    return body[:body.index(b";") + 1]


def test_purging_a_large_queue_holds_no_more_memory_than_purging_a_small_one(stores, tmp_path):
    """Purge listed every key of the queue before deleting them in one transaction: its memory grew
    with the backlog, which on a gateway is millions of records."""
    small, _, answer = _peak_anonymous_rss(_copy(stores[SMALL, False], tmp_path / "s"), "purge", "--yes")
    assert answer == {"purged_records": SMALL}
    large, seconds, answer = _peak_anonymous_rss(_copy(stores[LARGE, False], tmp_path / "l"), "purge", "--yes")
    assert answer == {"purged_records": LARGE}
    print(f"purge: peak private RSS {small >> 20} MiB for {SMALL} records, {large >> 20} MiB for {LARGE} "
          f"({seconds:.1f} s)")
    assert large - small < 6 << 20, (small, large)


def test_replaying_many_dead_letters_holds_no_more_memory_than_replaying_a_few(stores, tmp_path):
    """Replay read every letter into a list and moved them all in one transaction."""
    small, _, answer = _peak_anonymous_rss(_copy(stores[SMALL, True], tmp_path / "s"), "dead-letter", "replay")
    assert answer["replayed"] == SMALL
    large, seconds, answer = _peak_anonymous_rss(_copy(stores[LARGE, True], tmp_path / "l"), "dead-letter", "replay")
    assert answer == {"replayed": LARGE, "kept": 0}
    print(f"replay: peak private RSS {small >> 20} MiB for {SMALL} letters, {large >> 20} MiB for {LARGE} "
          f"({seconds:.1f} s)")
    assert large - small < 6 << 20, (small, large)


def test_a_purge_killed_part_way_leaves_a_consistent_partly_purged_queue(stores, tmp_path):
    state = _copy(stores[LARGE, False], tmp_path)
    _kill_after_first_commit(state, f"q:{QUEUE}".encode(), LARGE, "purge", "--yes")
    kept, counted, _, _ = _reopened(state)
    assert kept == counted
    assert 0 < counted["entries"] < LARGE, "the kill came once the purge had committed part of it"


def test_a_replay_killed_part_way_has_moved_each_letter_exactly_once(stores, tmp_path):
    state = _copy(stores[LARGE, True], tmp_path)
    _kill_after_first_commit(state, b"deadletter", LARGE, "dead-letter", "replay")
    kept, counted, queued, letters = _reopened(state)
    assert kept == counted
    assert 0 < len(queued) < LARGE, "the kill came once the replay had committed part of it"
    everything = queued + letters
    assert len(everything) == LARGE and set(everything) == {_name(index) for index in range(LARGE)}
