"""Reading what is still intact in an LMDB data file that LMDB itself refuses (truncated, damaged).

The file is read page by page in Python, never mapped, so a page past the end of a truncated
file is a page we count as lost instead of a crash. Starting from the newest valid meta page,
the walk follows the main B-tree to every named sub-database and each sub-database's tree to
its leaves; a branch or overflow page that is missing or not what its parent says is skipped
with what hangs below it. Only records reachable from the committed root are taken, so nothing
deleted (acked) comes back. `lost` is the sub-databases' committed entry counts minus what was
found.

Layout read here (LMDB 0.9, 64-bit): page header = pgno (8), pad (2), flags (2), lower (2),
upper (2) (overflow pages: page count (4) instead of lower/upper); node = lo (2), hi (2),
flags (2), key size (2), key, data. A meta page holds magic, version, address, map size, the
free and main databases (48 bytes each: pad, flags, depth, branch, leaf and overflow pages,
entries, root), last page and transaction id.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import lmdb

log = logging.getLogger(__name__)

_MAGIC = 0xBEEFC0DE
_HEADER = struct.Struct("<QHHHH")
_META = struct.Struct("<IIQQ48s48sQQ")
_DB = struct.Struct("<IHHQQQQQ")
_NODE = struct.Struct("<HHHH")
_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_META = 0x01, 0x02, 0x04, 0x08
_F_BIGDATA, _F_SUBDATA = 0x01, 0x02
_INVALID = (1 << 64) - 1
SKIPPED = (b"meta",)  # recomputed by the fresh queue
_BATCH_RECORDS = 10_000  # per transaction when writing what was salvaged
_BATCH_BYTES = 64 << 20


class Salvage:
    """Reads one damaged data file; `records()` streams what it finds, then the counts are final."""

    def __init__(self, path: str):
        self.path = path
        self.salvaged = 0
        self.lost = 0
        self.counted = False  # False when not even the file's index (its meta pages) could be read

    def records(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """(sub-database name, key, value) of every intact record of every sub-database but `meta`.

        A file that does not open (no descriptor left) raises: that says nothing of its records.
        A read that fails (EIO) ends the walk with what was found."""
        if not os.path.exists(self.path):  # nothing was moved aside
            return
        with open(self.path, "rb") as handle:
            try:
                meta = _newest_meta(handle)
                if meta is None:
                    return
                page_size, main_root = meta
                file = _File(handle, page_size, os.fstat(handle.fileno()).st_size // page_size)
                self.counted = True
                for name, descriptor in list(_walk(file, main_root, set())):
                    if name in SKIPPED or len(descriptor) < _DB.size:
                        continue
                    entries, root = _DB.unpack_from(descriptor)[6:8]
                    found = 0
                    for key, value in _walk(file, root, set()):
                        found += 1
                        yield name, key, value
                    self.salvaged += found
                    self.lost += max(entries - found, 0)
            except OSError:
                return


def restore(env: lmdb.Environment, found: Salvage) -> int:
    """Write what a damaged file still holds into a fresh environment in bounded transactions;
    returns the records written (fewer than found if the disk fills up: the agent starts anyway)."""
    written = size = 0
    batch: list[tuple[bytes, bytes, bytes]] = []
    try:
        for row in found.records():
            batch.append(row)
            size += len(row[2])
            if len(batch) >= _BATCH_RECORDS or size >= _BATCH_BYTES:
                written += _write(env, batch)
                batch, size = [], 0
        written += _write(env, batch)
    except lmdb.Error as exc:
        log.error("salvaging the damaged queue file stopped early", extra={"error": str(exc), "written": written})
    return written


def _write(env: lmdb.Environment, rows: list[tuple[bytes, bytes, bytes]]) -> int:
    with env.begin(write=True) as txn:
        for name, key, value in rows:
            txn.put(key, value, db=env.open_db(name, txn=txn))
    return len(rows)


class _File:
    def __init__(self, handle: BinaryIO, page_size: int, pages: int):
        self.handle = handle
        self.page_size = page_size
        self.pages = pages  # whole pages present in the file

    def page(self, pgno: int, count: int = 1) -> bytes | None:
        if pgno + count > self.pages:
            return None
        return os.pread(self.handle.fileno(), self.page_size * count, pgno * self.page_size)


def _newest_meta(handle: BinaryIO) -> tuple[int, int] | None:
    """(page size, main database root) of the valid meta page with the higher transaction id."""
    best = None
    for offset in sorted({0, 4096, *_page_sizes(handle)}):
        raw = os.pread(handle.fileno(), _HEADER.size + _META.size, offset)
        if len(raw) < _HEADER.size + _META.size:
            continue
        flags = _HEADER.unpack_from(raw)[2]
        magic, _, _, _, free_db, main_db, _, txnid = _META.unpack_from(raw, _HEADER.size)
        page_size = _DB.unpack_from(free_db)[0]  # LMDB keeps the page size in the free database's pad
        if magic != _MAGIC or not flags & _P_META or not _plausible(page_size):
            continue
        if best is None or txnid > best[0]:
            best = (txnid, page_size, _DB.unpack_from(main_db)[7])
    return None if best is None else (best[1], best[2])


def _page_sizes(handle: BinaryIO) -> list[int]:
    """The page size meta page 0 records (meta page 1 sits one page further), if it is readable."""
    raw = os.pread(handle.fileno(), _HEADER.size + _META.size, 0)
    if len(raw) < _HEADER.size + _META.size:
        return []
    size = _DB.unpack_from(_META.unpack_from(raw, _HEADER.size)[4])[0]
    return [size] if _plausible(size) else []


def _plausible(page_size: int) -> bool:
    return 512 <= page_size <= 65536 and not page_size & (page_size - 1)


def _walk(file: _File, pgno: int, seen: set[int]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every leaf reachable from page `pgno`; unreadable pages are skipped, and
    each page is read once however a damaged tree points to it."""
    if pgno == _INVALID or pgno in seen:
        return
    seen.add(pgno)
    page = file.page(pgno)
    if page is None:
        return
    number, _, flags, lower, _ = _HEADER.unpack_from(page)
    if number != pgno or lower < _HEADER.size or lower > len(page):
        return
    for pointer in struct.unpack_from(f"<{(lower - _HEADER.size) // 2}H", page, _HEADER.size):
        if pointer + _NODE.size > len(page):
            continue
        lo, hi, node_flags, key_size = _NODE.unpack_from(page, pointer)
        key_at = pointer + _NODE.size
        if flags & _P_BRANCH:
            yield from _walk(file, lo | hi << 16 | node_flags << 32, seen)
        elif flags & _P_LEAF:
            key = page[key_at:key_at + key_size]
            value = _value(file, page, key_at + key_size, lo | hi << 16, node_flags)
            if value is not None and len(key) == key_size:
                yield key, value


def _value(file: _File, page: bytes, at: int, size: int, flags: int) -> bytes | None:
    if not flags & _F_BIGDATA:
        value = page[at:at + size]
        return value if len(value) == size else None
    (overflow,) = struct.unpack_from("<Q", page, at)
    count = -(-(size + _HEADER.size) // file.page_size)
    pages = file.page(overflow, count)
    if (
        pages is None
        or struct.unpack_from("<Q", pages)[0] != overflow
        or not _HEADER.unpack_from(pages)[2] & _P_OVERFLOW
    ):
        return None
    return pages[_HEADER.size:_HEADER.size + size]
