"""Whether every B-tree page of an LMDB data file is what its parent says it is, read in Python.

LMDB trusts its pages: a page a flash card lost (zeros, or the 0xff of an erased block) in the
middle of a tree is found only when a cursor steps onto it, and stepping from leaf to leaf
onto such a page fails an assertion in LMDB's C code, which aborts the process. Every start
would abort again at the same page. This check reads the file page by page (never mapped, so
nothing here can crash), as salvage.py does, before LMDB opens it: every branch and leaf page
of the main tree and of every sub-database (not the values' overflow pages). It reads every
tree page, so it runs only where a start may meet such a page (damage.py: after a run in the
same boot that ended without a stop).

Layout: salvage.py's docstring.
"""

from __future__ import annotations

import os
import struct

from edgeagent.queue.salvage import (
    _DB,
    _F_BIGDATA,
    _F_SUBDATA,
    _HEADER,
    _INVALID,
    _NODE,
    _P_BRANCH,
    _P_LEAF,
    _P_OVERFLOW,
    _File,
    _newest_meta,
)

_MAX_DEPTH = 32  # LMDB's CURSOR_STACK: no tree is deeper
_TREE_FLAGS = _P_BRANCH | _P_LEAF | _P_OVERFLOW | 0x08  # with P_META: what a tree page may not mix


class Damaged(Exception):
    """A page that is not what its tree says."""


def damage(path: str) -> str | None:
    """What is wrong with the first damaged page found in the data file at `path`, or None.
    A file whose meta pages do not read is left to LMDB, which refuses to open it."""
    with open(path, "rb") as handle:
        meta = _newest_meta(handle)
        if meta is None:
            return None
        page_size, main_root = meta
        file = _File(handle, page_size, os.fstat(handle.fileno()).st_size // page_size)
        try:
            _Check(file).tree(main_root, b"the main database", main=True)
        except Damaged as exc:
            return str(exc)
    return None


class _Check:
    def __init__(self, file: _File):
        self.file = file
        self.seen: set[int] = set()

    def tree(self, root: int, name: bytes, main: bool = False) -> None:
        if root != _INVALID:
            self._page(root, name, 0, main)

    def _page(self, pgno: int, name: bytes, depth: int, main: bool) -> None:
        where = f"page {pgno} of {name.decode(errors='replace')}"
        if depth >= _MAX_DEPTH or pgno in self.seen:
            raise Damaged(f"{where}: the tree loops or is deeper than LMDB allows")
        self.seen.add(pgno)
        page = self.file.page(pgno)
        if page is None:
            raise Damaged(f"{where}: past the end of the file")
        number, _, flags, lower, upper = _HEADER.unpack_from(page)
        kind = flags & _TREE_FLAGS
        if number != pgno or kind not in (_P_BRANCH, _P_LEAF):
            raise Damaged(f"{where}: not a tree page (it says page {number}, flags {flags:#06x})")
        size = len(page)
        if not _HEADER.size <= lower <= upper <= size:
            raise Damaged(f"{where}: its free space is out of bounds ({lower}..{upper})")
        for pointer in struct.unpack_from(f"<{(lower - _HEADER.size) // 2}H", page, _HEADER.size):
            if not upper <= pointer <= size - _NODE.size:
                raise Damaged(f"{where}: a node lies outside the page")
            lo, hi, node_flags, key_size = _NODE.unpack_from(page, pointer)
            data_at = pointer + _NODE.size + key_size
            if kind == _P_BRANCH:
                if data_at > size:
                    raise Damaged(f"{where}: a key runs past the page")
                self._page(lo | hi << 16 | node_flags << 32, name, depth + 1, main)
            elif main and node_flags & _F_SUBDATA:  # a named sub-database: its tree next
                if data_at + _DB.size > size:
                    raise Damaged(f"{where}: a sub-database's descriptor runs past the page")
                key = page[pointer + _NODE.size:data_at]
                self.tree(_DB.unpack_from(page, data_at)[7], key)
            else:
                self._value(page, data_at, lo | hi << 16, node_flags, where)

    def _value(self, page: bytes, at: int, size: int, flags: int, where: str) -> None:
        """A value's bounds. An overflow value's pages are not read: LMDB never acts on what they
        hold (a damaged one reads as a record that does not decode, which is quarantined), but a
        pointer past the end of the file would fault the map."""
        if flags & _F_BIGDATA:
            if at + 8 > len(page):
                raise Damaged(f"{where}: a value's overflow pointer runs past the page")
            (overflow,) = struct.unpack_from("<Q", page, at)
            if overflow + -(-(size + _HEADER.size) // self.file.page_size) > self.file.pages:
                raise Damaged(f"{where}: a value's overflow pages lie past the end of the file")
        elif at + size > len(page):
            raise Damaged(f"{where}: a value runs past the page")
