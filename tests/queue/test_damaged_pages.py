"""A page of the data file that a flash card lost: found, noted, and salvaged by the next start."""

from __future__ import annotations

import asyncio
import os

import pytest

from edgeagent.errors import RetryableError
from edgeagent.queue import damage, pagecheck
from edgeagent.queue.environment import StorageDamagedError
from edgeagent.queue.ops import KEY
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal
from tests.e2e.test_corruption import _leaves

RECORDS = 600  # small records: a queue of a few dozen leaf pages


def _overwrite(directory, page: int, fill: bytes) -> None:
    """Write over one page as a card that lost it reads back; an open store sees it at once (the map is shared)."""
    fd = os.open(os.path.join(directory, "data.mdb"), os.O_WRONLY)
    try:
        os.pwrite(fd, fill * 4096, page * 4096)
    finally:
        os.close(fd)


async def _filled(directory, **options) -> tuple[QueueStore, list[int]]:
    store = QueueStore(str(directory), **options)
    store.open()
    store.start()
    queue = store.queue("q", Signal.TRACES)
    for _ in range(RECORDS):
        await store.put([queue], os.urandom(100), 1, Signal.TRACES)
    return store, _leaves(directory / "data.mdb", b"q:q")


def test_a_commit_that_meets_a_damaged_page_is_refused_noted_once_and_the_next_open_salvages_the_file(tmp_path):
    reported: list[str] = []
    corrupt: list[str] = []
    salvaged: list[tuple[int, int]] = []

    async def scenario() -> None:
        store, leaves = await _filled(tmp_path, on_damaged=reported.append)
        _overwrite(tmp_path, leaves[-1], b"\0")  # where the next put goes
        queue = store.queue("q", Signal.TRACES)
        for _ in range(2):
            with pytest.raises(RetryableError, match="damaged"):
                await store.put([queue], b"new", 1, Signal.TRACES)
        await asyncio.sleep(0.05)  # the report is handed to the loop
        await store.close()

    asyncio.run(scenario())
    assert len(reported) == 1 and "is damaged (mdb_put: MDB_CORRUPTED" in reported[0]
    assert (tmp_path / damage.DAMAGE_NAME).exists()
    assert not (tmp_path / damage.RUN_NAME).exists()  # a stop, even a damaged one

    store = QueueStore(str(tmp_path), on_corrupt=corrupt.append, on_salvage=lambda *counts: salvaged.append(counts))
    store.open()
    try:
        assert len(corrupt) == 1 and "is damaged" in corrupt[0] and "moved it to" in corrupt[0]
        found, lost = salvaged[0]
        assert found + lost == RECORDS and 0 < lost < RECORDS // 4
        assert not (tmp_path / damage.DAMAGE_NAME).exists()
        assert any(name.startswith("corrupt-") for name in os.listdir(tmp_path))
    finally:
        asyncio.run(store.close())


@pytest.mark.parametrize("fill", [b"\0", b"\xff"], ids=["zeros", "erased"])
def test_the_page_check_names_a_damaged_page_deep_in_a_tree_and_passes_an_intact_file(tmp_path, fill):
    async def scenario() -> list[int]:
        store, leaves = await _filled(tmp_path)
        await store.close()
        return leaves

    leaves = asyncio.run(scenario())
    data = str(tmp_path / "data.mdb")
    assert pagecheck.damage(data) is None
    page = leaves[len(leaves) // 2]
    _overwrite(tmp_path, page, fill)
    says, flags = int.from_bytes(fill * 8, "little"), int.from_bytes(fill * 2, "little")
    assert pagecheck.damage(data) == f"page {page} of q:q: not a tree page (it says page {says}, flags {flags:#06x})"


def test_a_start_checks_the_pages_only_after_a_run_in_this_boot_that_ended_without_a_stop(tmp_path):
    async def scenario() -> list[int]:
        store, leaves = await _filled(tmp_path)
        await store.close()
        return leaves

    leaves = asyncio.run(scenario())
    _overwrite(tmp_path, leaves[len(leaves) // 2], b"\0")
    directory = str(tmp_path)
    assert damage.known(directory) is None  # the last run stopped: no check
    (tmp_path / damage.RUN_NAME).write_text("another-boot 1.0\n")
    assert damage.known(directory) is None  # a power cut: no check either
    damage.started(directory)
    boot, began = (tmp_path / damage.RUN_NAME).read_text().split()
    (tmp_path / damage.RUN_NAME).write_text(f"{boot} {float(began) + 3600}\n")
    assert damage.known(directory) is None  # begun later in its boot than now: another boot
    damage.started(directory)  # a run of this boot that aborted
    assert damage.known(directory) is not None and "not a tree page" in damage.known(directory)
    damage.stopped(directory)
    damage.note(directory, "mdb_get: MDB_PAGE_NOTFOUND")
    assert damage.known(directory) == "mdb_get: MDB_PAGE_NOTFOUND"


def test_a_damage_note_outlives_no_data_file_the_operator_moved_away(tmp_path):
    """With recreate false the start refuses a damaged file and says to move it away; once moved,
    the note alone refused every later start, saying the (absent) file was damaged."""
    async def scenario() -> None:
        store, _ = await _filled(tmp_path)
        await store.close()

    asyncio.run(scenario())
    damage.note(str(tmp_path), "mdb_get: MDB_CORRUPTED")  # a run met a damaged page
    with pytest.raises(StorageDamagedError, match="is damaged"):
        QueueStore(str(tmp_path), recreate=False).open()
    aside = tmp_path / "aside"
    aside.mkdir()
    (tmp_path / "data.mdb").rename(aside / "data.mdb")  # as the refusal says: move it away yourself

    store = QueueStore(str(tmp_path), recreate=False)
    store.open()
    try:
        assert not (tmp_path / damage.DAMAGE_NAME).exists()
    finally:
        asyncio.run(store.close())


def test_a_compaction_that_meets_a_damaged_page_notes_it_and_reports_it(tmp_path):
    """LMDB's compacting copy reads every page: it found the damage, failed, and was tried again at
    each interval, the damage never noted; the run went on until a lease read aborted the process.
    The page is an erased block (0xff), which the copy always refuses as the wrong type of page; a
    zeroed one deep in the tree can make it read beyond the page and crash instead (as a lease
    read aborts), and then the run's note has the next start check the file and salvage it."""
    reported: list[str] = []

    async def scenario() -> None:
        store, leaves = await _filled(tmp_path, on_damaged=reported.append)
        _overwrite(tmp_path, leaves[len(leaves) // 2], b"\xff")  # not where a put or the first lease goes
        try:
            with pytest.raises(RetryableError, match="damaged"):
                await store.compact_now()
            for _ in range(500):  # the report is handed to the loop: at most 5 s
                if reported:
                    break
                await asyncio.sleep(0.01)
        finally:
            await store.close()

    asyncio.run(scenario())
    assert len(reported) == 1 and "is damaged" in reported[0]
    assert (tmp_path / damage.DAMAGE_NAME).exists()


def test_a_read_only_command_that_meets_a_damaged_page_writes_no_note(tmp_path):
    """A read-only command (run beside a stopped agent, as root too) wrote the damage note: a file of
    its user's, private, which the agent's next start could then not read, and did not start."""
    async def scenario() -> None:
        store, leaves = await _filled(tmp_path)
        await store.close()
        _overwrite(tmp_path, leaves[len(leaves) // 2], b"\0")
        reader = QueueStore(str(tmp_path), read_only=True)
        reader.open()
        try:
            queue = reader.queue("q", Signal.TRACES)
            met = 0
            for seq in range(RECORDS + 1):  # a get descends to the damaged leaf: MDB_CORRUPTED
                try:
                    with reader.reading(queue) as txn:
                        txn.get(KEY.pack(seq))
                except RetryableError as exc:
                    assert "damaged" in str(exc)
                    met += 1
            assert met
        finally:
            await reader.close()

    asyncio.run(scenario())
    assert not (tmp_path / damage.DAMAGE_NAME).exists()
