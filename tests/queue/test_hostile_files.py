"""Queue files under hostile conditions: loose umasks, wrong owners, truncation."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import lmdb
import pytest
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.errors import CorruptRecordError
from edgeagent.queue import environment, record
from edgeagent.queue.ops import KEY
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal
from tests.helpers.descriptors import no_free_descriptors


def traces_request(index: int, size: int) -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = index.to_bytes(16, "big")
    span.span_id = index.to_bytes(8, "big")
    span.name = os.urandom(size // 2).hex()  # incompressible: records of about `size` bytes
    return request.SerializeToString()


async def _fill(directory: str, count: int, size: int = 200) -> list[bytes]:
    store = QueueStore(directory)
    store.open()
    store.start()
    queue = store.queue("q", Signal.TRACES)
    bodies = [traces_request(index, size) for index in range(count)]
    for body in bodies:
        await store.put([queue], body, 1, Signal.TRACES)
    await store.close()
    return bodies


async def _drain(directory: str, **options) -> list[bytes]:
    """Every request of the queue, in order, acknowledged."""
    store = QueueStore(directory, **options)
    store.open()
    store.start()
    queue = store.queue("q", Signal.TRACES)
    bodies: list[bytes] = []
    while (lease := await queue.lease(1000)) is not None:
        bodies += lease.bodies
        await queue.ack(lease)
    await store.close()
    return bodies


async def _compact(directory: str) -> None:
    store = QueueStore(directory)
    store.open()
    store.start()
    await store.compact_now()
    await store.close()


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_queue_files_are_private_whatever_the_umask(tmp_path, umask):
    directory = str(tmp_path / "state" / "queue")
    old = os.umask(umask)
    try:
        asyncio.run(_fill(directory, 3))
        asyncio.run(_compact(directory))  # the compacted copy replaces data.mdb
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    names = os.listdir(directory)
    assert {"data.mdb", "lock.mdb", "edgeagent.lock", "reserve.ballast"} <= set(names)
    modes = {name: oct(stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)) for name in names}
    assert modes == {name: oct(0o600) for name in names}


def test_a_truncated_data_file_gives_back_every_record_still_readable(tmp_path):
    directory = str(tmp_path / "queue")
    bodies = asyncio.run(_fill(directory, 400, size=3000))
    data = os.path.join(directory, "data.mdb")
    os.truncate(data, os.path.getsize(data) * 3 // 4)

    salvaged: list[tuple[int, int]] = []

    drained = asyncio.run(_drain(directory, on_salvage=lambda found, lost: salvaged.append((found, lost))))
    assert salvaged and salvaged[0][0] == len(drained) > 0
    assert salvaged[0][0] + salvaged[0][1] == len(bodies)  # every record is salvaged or counted lost
    assert set(drained) <= set(bodies)
    assert any(name.startswith("corrupt-") for name in os.listdir(directory))


def test_a_salvage_that_cannot_begin_puts_the_damaged_file_back_for_the_next_start(tmp_path):
    """The damaged file was moved aside, the fresh one made, then the moved file could not be
    read (no descriptor left): the start failed, and the next one went on with the empty fresh
    queue, the moved file never salvaged."""
    directory = str(tmp_path / "queue")
    bodies = asyncio.run(_fill(directory, 400, size=3000))
    data = os.path.join(directory, "data.mdb")
    os.truncate(data, os.path.getsize(data) * 3 // 4)
    # the lock file's descriptor and the fresh environment's three: none left to read the moved file
    with pytest.raises(OSError, match="Too many open files"), no_free_descriptors(spare=4):
        QueueStore(directory).open()
    salvaged: list[tuple[int, int]] = []
    drained = asyncio.run(_drain(directory, on_salvage=lambda found, lost: salvaged.append((found, lost))))
    assert salvaged and salvaged[0][0] == len(drained) > 0
    assert set(drained) <= set(bodies)
    assert len([name for name in os.listdir(directory) if name.startswith("corrupt-")]) == 1


def test_recreate_false_refuses_a_damaged_data_file_and_leaves_it_in_place(tmp_path):
    directory = str(tmp_path / "queue")
    asyncio.run(_fill(directory, 400, size=3000))
    data = os.path.join(directory, "data.mdb")
    os.truncate(data, os.path.getsize(data) * 3 // 4)
    size = os.path.getsize(data)
    with pytest.raises(environment.StorageDamagedError, match="recreate: true"):
        QueueStore(directory, recreate=False).open()
    assert os.path.getsize(data) == size
    assert not any(name.startswith("corrupt-") for name in os.listdir(directory))


def test_a_healthy_file_whose_map_does_not_fit_in_memory_is_refused_not_moved_aside(tmp_path):
    """LMDB's ENOMEM (a map larger than the address space left: a 32-bit device, systemd's
    LimitAS=) was taken for damage: the intact file was moved aside and the queue started empty."""
    directory = str(tmp_path / "queue")
    asyncio.run(_fill(directory, 50))
    with pytest.raises(lmdb.MemoryError):
        QueueStore(directory, map_size=1 << 62).open()
    assert sorted(name for name in os.listdir(directory) if not name.startswith("reserve")) == [
        "data.mdb", "edgeagent.lock", "lock.mdb"]
    store = QueueStore(directory)
    store.open()
    assert store.queue("q", Signal.TRACES).entries == 50
    asyncio.run(store.close())


def test_a_store_that_fails_to_open_does_not_keep_the_directory_locked(tmp_path):
    """The lock was taken, then the open failed, and the lock stayed held for as long as the
    error was kept (its traceback holds the store): a retry in the same process, a reload once the
    operator fixed the file, was refused as "in use by edgeagent process <its own pid>"."""
    directory = str(tmp_path / "queue")
    asyncio.run(_fill(directory, 50))
    data = os.path.join(directory, "data.mdb")
    intact = pathlib.Path(data).read_bytes()
    os.truncate(data, len(intact) // 2)
    with pytest.raises(environment.StorageDamagedError) as refused:
        QueueStore(directory, recreate=False, lock_timeout=0.1).open()
    assert refused.value.__traceback__ is not None  # the error is still held, as a caller logging it later holds it
    assert environment.lock_holder(directory) is None
    pathlib.Path(data).write_bytes(intact)  # the operator puts the file back
    store = QueueStore(directory, lock_timeout=0.1)
    store.open()
    assert store.queue("q", Signal.TRACES).entries == 50
    asyncio.run(store.close())


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_directory_permissions_create_missing_directories_with_that_mode_minus_the_umask(tmp_path, umask):
    existing = tmp_path / "state"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    directory = existing / "queues" / "traces"
    old = os.umask(umask)
    try:
        QueueStore(str(directory), directory_mode=0o750).open()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o750 & ~umask
    assert stat.S_IMODE(os.stat(directory.parent).st_mode) == 0o750 & ~umask
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o755  # what exists is left as it is


_OPEN_AS_ANOTHER_USER = textwrap.dedent("""
    import os, sys
    import lmdb._envid  # imported by the binding at open: load it while this venv is still readable
    from edgeagent.queue.store import QueueStore
    from edgeagent.queue.environment import StorageAccessError
    os.setegid(65534)
    os.seteuid(65534)
    try:
        QueueStore(sys.argv[1]).open()
    except StorageAccessError as exc:
        print("refused:", exc)
        sys.exit(3)
    print("opened")
""")


def test_a_data_file_the_agent_may_not_write_is_refused_not_moved_aside():
    parent = pathlib.Path(tempfile.mkdtemp(prefix="edgeagent-owner-"))  # reachable by another user
    directory = parent / "queue"
    asyncio.run(_fill(str(directory), 5))
    os.chmod(parent, 0o755)
    # the directory and lock file belong to the agent's user; data.mdb was rewritten by root
    os.chown(directory, 65534, 65534)
    os.chown(directory / "edgeagent.lock", 65534, 65534)
    before = sorted(os.listdir(directory))
    result = subprocess.run([sys.executable, "-c", _OPEN_AS_ANOTHER_USER, str(directory)], check=False,
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "data.mdb" in result.stdout and "chown" in result.stdout
    assert sorted(os.listdir(directory)) == before  # nothing moved aside, nothing created
    shutil.rmtree(parent)


def test_a_bit_flip_in_a_stored_payload_is_found_when_the_record_is_read(tmp_path):
    directory = str(tmp_path / "queue")
    body = asyncio.run(_fill(directory, 1, size=400))[0]
    env = lmdb.open(directory, max_dbs=64)
    with env.begin(db=env.open_db(b"q:q")) as txn:
        value = bytes(txn.get(KEY.pack(1)))
    env.close()
    header = record.decode_header(value)
    decompressor = zstandard.ZstdDecompressor()
    undetected = []
    for offset in range(header.body_offset, len(value)):
        flipped = bytearray(value)
        flipped[offset] ^= 0x04
        try:
            if record.decode_body(bytes(flipped), header, decompressor) != body:
                undetected.append(offset)
        except CorruptRecordError:
            pass
    assert undetected == []


def test_a_lock_that_says_nothing_still_names_the_process_holding_it(tmp_path):
    """An agent of an earlier version leaves its lock file empty: /proc/locks names it."""
    path = tmp_path / "edgeagent.lock"
    script = (f"import fcntl, time\nhandle = open({str(path)!r}, 'a')\nfcntl.flock(handle, fcntl.LOCK_EX)\n"
              "print('locked', flush=True)\ntime.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert environment.lock_holder(str(tmp_path)) == {"pid": holder.pid}
        assert f"process {holder.pid}" in environment.refusal(str(tmp_path), {"pid": holder.pid})
    finally:
        holder.kill()
        holder.wait(10)
    assert environment.lock_holder(str(tmp_path)) is None
