"""A live compaction's swap that fails, or a crash in it, loses nothing and leaves the queue serving.

The swap closes the environment, renames the compacted copy over data.mdb and opens it again.
Failures are made for real while the swap waits for a reader to leave (the gate): the staged
copy deleted, descriptors exhausted, lock.mdb turned into a directory so that no environment opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator

import pytest

from edgeagent.errors import RetryableError
from edgeagent.queue.compaction import cleanup_compaction_leftovers
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal
from tests.helpers.descriptors import no_free_descriptors
from tests.queue.test_compaction import ROOT, _drain, _fill

_TIMEOUT = 20.0  # seconds a swap may be held, or a store may take to reopen


@contextlib.asynccontextmanager
async def _swap_held(store: QueueStore) -> AsyncIterator[asyncio.Future[tuple[int, int]]]:
    """Start a live compaction and hold it where the copy is staged and the swap waits for a reader
    to leave; the swap goes on when the block ends. Yields the compaction's future."""
    inside, leave = threading.Event(), threading.Event()

    def reader() -> None:
        with store.gate.shared():
            inside.set()
            leave.wait(_TIMEOUT)

    thread = threading.Thread(target=reader)
    thread.start()
    inside.wait(_TIMEOUT)
    compaction = store.compact_now()
    try:
        for _ in range(int(_TIMEOUT / 0.01)):  # the writer staged the copy and waits for the gate
            if store.gate._exclusive:
                break
            await asyncio.sleep(0.01)
        assert store.gate._exclusive, "the compaction never reached its swap"
        yield compaction
    finally:
        leave.set()
        await asyncio.to_thread(thread.join)


async def _opened(directory: str, count: int) -> list[bytes]:
    """What a fresh store on `directory` holds, in order."""
    store = QueueStore(directory)
    store.open()
    store.start()
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    assert queue.entries == count
    bodies = await _drain(store, count + 1)
    await store.close()
    return bodies


def test_a_swap_whose_rename_fails_keeps_the_queue_serving_on_the_old_file(tmp_path):
    """The staged copy is gone when the swap renames it: the environment was left closed, and
    every later put and lease failed until a restart."""
    directory = str(tmp_path)

    async def scenario() -> None:
        store = QueueStore(directory, sync=False)
        store.open()
        store.start()
        bodies = await _fill(store, 40, size=2000)
        async with _swap_held(store) as compaction:
            os.unlink(tmp_path / ".data.mdb.compacted")
        with pytest.raises(Exception, match=directory):
            await compaction
        assert (store.compactions, store.compaction_failures) == (0, 1)
        more = os.urandom(500)
        await asyncio.wait_for(store.put([store.queues["otlphttp/traces"]], more, 1, Signal.TRACES), _TIMEOUT)
        before, after = await store.compact_now()  # the next compaction tries again
        assert store.compactions == 1 and after <= before
        await store.close()
        assert await _opened(directory, 41) == [*bodies, more]

    asyncio.run(scenario())


def test_a_swap_out_of_descriptors_changes_nothing_and_the_queue_keeps_serving(tmp_path):
    """Every descriptor taken when the swap starts (a flood of connections): it fails before it
    closes anything, the queue takes and hands out records meanwhile, and compacts once they are free."""
    directory = str(tmp_path)

    async def scenario() -> None:
        store = QueueStore(directory, sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        bodies = await _fill(store, 40, size=2000)
        more = os.urandom(500)
        with contextlib.ExitStack() as exhausted:
            async with _swap_held(store) as compaction:
                exhausted.enter_context(no_free_descriptors())  # the copy is staged; the swap is left
            with pytest.raises(Exception, match=directory):
                await compaction
            assert (store.compactions, store.compaction_failures) == (0, 1)
            await asyncio.wait_for(store.put([queue], more, 1, Signal.TRACES), _TIMEOUT)
            held = await queue.lease(max_items=1)
            assert held is not None and held.bodies == [bodies[0]]
            queue.release(held)
        assert not (tmp_path / ".data.mdb.compacted").exists()
        await store.compact_now()
        assert store.compactions == 1
        await store.close()
        assert await _opened(directory, 41) == [*bodies, more]

    asyncio.run(scenario())


def test_a_swap_whose_new_environment_does_not_open_serves_again_once_it_opens(tmp_path):
    """Past the rename, the compacted file is the queue: when it cannot be opened (here lock.mdb
    became a directory), requests fail as retryable and the writer opens it as soon as it can."""
    directory = str(tmp_path)
    lock = tmp_path / "lock.mdb"

    async def scenario() -> None:
        store = QueueStore(directory, sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        bodies = await _fill(store, 40, size=2000)
        async with _swap_held(store) as compaction:
            lock.unlink()
            lock.mkdir()
        with pytest.raises(Exception, match=directory):
            await compaction
        assert store.compaction_failures == 1
        with pytest.raises(RetryableError):
            await asyncio.wait_for(store.put([queue], b"refused", 1, Signal.TRACES), _TIMEOUT)
        with pytest.raises(RetryableError):
            await queue.lease(max_items=1)
        lock.rmdir()
        more = os.urandom(500)
        await asyncio.wait_for(store.put([queue], more, 1, Signal.TRACES), _TIMEOUT)
        assert await _drain(store, 41) == [*bodies, more]
        await store.close()

    asyncio.run(scenario())


_KEPT = 30  # records left queued (acknowledged puts, not yet delivered) when the compaction starts


def _body(index: int) -> bytes:
    return index.to_bytes(4, "big") * 500


async def _compact_and_die(directory: str, step: str) -> None:
    """In a child process: queue records, deliver some, and be killed (SIGKILL) at `step` of a live compaction."""
    from edgeagent.queue import compaction
    from edgeagent.queue import store as store_module

    def kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def after(function):  # type: ignore[no-untyped-def]
        def wrapped(*args):  # type: ignore[no-untyped-def]
            result = function(*args)
            kill()
            return result
        return wrapped

    store = QueueStore(directory)
    store.open()
    store.start()
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    for index in range(_KEPT + 20):
        await store.put([queue], _body(index), 1, Signal.TRACES)
    assert len(await _drain(store, 20)) == 20  # acknowledged deliveries: gone for good
    if step == "staged":
        store_module.copy_compacted = after(store_module.copy_compacted)
    elif step == "closed":
        QueueStore._drop_env = after(QueueStore._drop_env)  # type: ignore[method-assign]
    elif step == "renamed":
        compaction.rename_into_place = after(compaction.rename_into_place)
    elif step == "synced":  # the rename made durable, the compacted file not opened yet
        QueueStore._reopen = lambda self: kill()  # type: ignore[method-assign,assignment,return-value]
    elif step == "reopened":
        QueueStore._reopen = after(QueueStore._reopen)  # type: ignore[method-assign]
    await store.compact_now()
    raise AssertionError(f"not killed at {step}")


@pytest.mark.e2e  # a process per step
@pytest.mark.parametrize("step", ["staged", "closed", "renamed", "synced", "reopened"])
def test_a_crash_at_each_step_of_the_swap_reopens_with_every_acknowledged_record(tmp_path, step):
    directory = str(tmp_path / "queue")
    script = ("import asyncio, sys; from tests.queue.test_compaction_swap import _compact_and_die; "
              "asyncio.run(_compact_and_die(sys.argv[1], sys.argv[2]))")
    result = subprocess.run([sys.executable, "-c", script, directory, step], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    cleanup_compaction_leftovers(directory)  # as the service does before it opens the queue
    # the run was killed: its note that it was running stays (queue/damage.py)
    assert sorted(os.listdir(directory)) == ["data.mdb", "edgeagent.lock", "edgeagent.running", "lock.mdb",
                                             "reserve.ballast"]
    assert asyncio.run(_opened(directory, _KEPT)) == [_body(index) for index in range(20, 20 + _KEPT)]


def test_a_compaction_on_start_that_fails_starts_the_queue_on_the_uncompacted_file(tmp_path):
    """Its scratch directory gone: the OSError ended the start, where an LMDB error was logged
    and the queue opened as it was."""
    directory = str(tmp_path / "queue")

    async def scenario() -> None:
        store = QueueStore(directory, sync=False)
        store.open()
        store.start()
        bodies = await _fill(store, 40, size=2000)
        await store.close()
        reopened = QueueStore(directory, compact_on_start=True, compaction_scratch=str(tmp_path / "gone"))
        reopened.open()
        reopened.start()
        await reopened.compacted()
        assert reopened.compaction_failures == 1
        reopened.queue("otlphttp/traces", Signal.TRACES)
        assert await _drain(reopened, 41) == bodies
        await reopened.close()

    asyncio.run(scenario())
