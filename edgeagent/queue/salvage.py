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

import os
import struct
from dataclasses import dataclass, field

_MAGIC = 0xBEEFC0DE
_HEADER = struct.Struct("<QHHHH")
_META = struct.Struct("<IIQQ48s48sQQ")
_DB = struct.Struct("<IHHQQQQQ")
_NODE = struct.Struct("<HHHH")
_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_META = 0x01, 0x02, 0x04, 0x08
_F_BIGDATA, _F_SUBDATA = 0x01, 0x02
_INVALID = (1 << 64) - 1
_MAX_DEPTH = 64
SKIPPED = (b"meta",)  # recomputed by the fresh queue


@dataclass
class Salvage:
    tables: dict[bytes, list[tuple[bytes, bytes]]] = field(default_factory=dict)  # name -> (key, value)
    salvaged: int = 0
    lost: int = 0


class _File:
    def __init__(self, handle, page_size: int, pages: int):
        self.handle = handle
        self.page_size = page_size
        self.pages = pages  # whole pages present in the file

    def page(self, pgno: int, count: int = 1) -> bytes | None:
        if pgno + count > self.pages:
            return None
        return os.pread(self.handle.fileno(), self.page_size * count, pgno * self.page_size)


def salvage(path: str) -> Salvage:
    """Every intact record of every named sub-database but `meta`; an unreadable file yields nothing."""
    found = Salvage()
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            meta = _newest_meta(handle)
            if meta is None:
                return found
            page_size, main_root = meta
            file = _File(handle, page_size, size // page_size)
            names: list[tuple[bytes, bytes]] = []
            _walk(file, main_root, names, 0)
            for name, descriptor in names:
                if name in SKIPPED or len(descriptor) < _DB.size:
                    continue
                entries, root = _DB.unpack_from(descriptor)[6:8]
                rows: list[tuple[bytes, bytes]] = []
                if root != _INVALID:
                    _walk(file, root, rows, 0)
                found.tables[name] = rows
                found.salvaged += len(rows)
                found.lost += max(entries - len(rows), 0)
    except OSError:
        pass
    return found


def _newest_meta(handle) -> tuple[int, int] | None:
    """(page size, main database root) of the valid meta page with the higher transaction id."""
    best = None
    first = os.pread(handle.fileno(), 4096 + _HEADER.size + _META.size, 0)
    for offset in _meta_offsets(first):
        raw = os.pread(handle.fileno(), _HEADER.size + _META.size, offset)
        if len(raw) < _HEADER.size + _META.size:
            continue
        flags = _HEADER.unpack_from(raw)[2]
        magic, version, _, _, free_db, main_db, _, txnid = _META.unpack_from(raw, _HEADER.size)
        if magic != _MAGIC or not flags & _P_META:
            continue
        page_size = _DB.unpack_from(free_db)[0]  # LMDB keeps the page size in the free database's pad
        if page_size < 512 or page_size & (page_size - 1):
            continue
        if best is None or txnid > best[0]:
            best = (txnid, page_size, _DB.unpack_from(main_db)[7])
    return None if best is None else (best[1], best[2])


def _meta_offsets(first: bytes) -> list[int]:
    """Meta pages 0 and 1; page 1's offset depends on the page size kept in page 0 (if readable)."""
    offsets = [0]
    if len(first) >= _HEADER.size + _META.size:
        page_size = _DB.unpack_from(_META.unpack_from(first, _HEADER.size)[4])[0]
        if 512 <= page_size <= 65536 and not page_size & (page_size - 1):
            offsets.append(page_size)
    return offsets + [4096] if 4096 not in offsets else offsets


def _walk(file: _File, pgno: int, out: list[tuple[bytes, bytes]], depth: int) -> None:
    if depth > _MAX_DEPTH or pgno == _INVALID:
        return
    page = file.page(pgno)
    if page is None:
        return
    number, _, flags, lower, _ = _HEADER.unpack_from(page)
    if number != pgno or lower < _HEADER.size or lower > len(page):
        return
    pointers = struct.unpack_from(f"<{(lower - _HEADER.size) // 2}H", page, _HEADER.size)
    for pointer in pointers:
        if pointer + _NODE.size > len(page):
            continue
        lo, hi, node_flags, key_size = _NODE.unpack_from(page, pointer)
        key_at = pointer + _NODE.size
        if flags & _P_BRANCH:
            _walk(file, lo | hi << 16 | node_flags << 32, out, depth + 1)
        elif flags & _P_LEAF:
            key = page[key_at:key_at + key_size]
            value = _value(file, page, key_at + key_size, lo | hi << 16, node_flags)
            if value is not None and len(key) == key_size:
                out.append((key, value))


def _value(file: _File, page: bytes, at: int, size: int, flags: int) -> bytes | None:
    if not flags & _F_BIGDATA:
        value = page[at:at + size]
        return value if len(value) == size else None
    (overflow,) = struct.unpack_from("<Q", page, at)
    count = -(-(size + _HEADER.size) // file.page_size)
    pages = file.page(overflow, count)
    if pages is None or struct.unpack_from("<Q", pages)[0] != overflow or not _HEADER.unpack_from(pages)[2] & _P_OVERFLOW:
        return None
    return pages[_HEADER.size:_HEADER.size + size]
