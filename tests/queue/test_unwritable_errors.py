"""Which write errors mean the filesystem refuses writes (not room, not a bug): read-only, I/O errors, quota."""

from __future__ import annotations

import errno
import os

import lmdb
import pytest

from edgeagent.queue import environment


@pytest.mark.parametrize(("error", "reason"), [
    (OSError(errno.EROFS, os.strerror(errno.EROFS)), "read_only"),
    (lmdb.Error("mdb_txn_commit: Read-only file system"), "read_only"),
    (OSError(errno.EIO, os.strerror(errno.EIO)), "io_error"),
    (lmdb.Error("mdb_txn_commit: Input/output error"), "io_error"),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "quota"),
    (lmdb.Error("mdb_txn_commit: Disk quota exceeded"), "quota"),
])
def test_a_refused_write_is_named_by_what_the_filesystem_said(error, reason):
    assert environment.unwritable(error) == reason


@pytest.mark.parametrize("error", [lmdb.MapFullError("mdb_put: MDB_MAP_FULL"), lmdb.Error("mdb_put: MDB_BAD_VALSIZE"),
                                   OSError(errno.EACCES, os.strerror(errno.EACCES))])
def test_other_errors_are_not_taken_for_a_filesystem_refusing_writes(error):
    assert environment.unwritable(error) is None


def test_a_directory_on_a_writable_filesystem_is_not_read_only(tmp_path):
    assert not environment.read_only(str(tmp_path))
