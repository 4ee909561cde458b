"""The dead-letter store: batches the upstream rejected permanently, kept with its answer.

Key layout: sub-database `deadletter`, key an 8-byte big-endian sequence, value a 4-byte
length, a JSON description (queue, exporter, status, reason, the upstream's response,
time_ms) and the original queue record. Entries leave only by replay (moved back to their
queue in one transaction) or purge.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lmdb
import zstandard

from edgeagent.queue import record

_KEY = struct.Struct(">Q")
_LENGTH = struct.Struct(">I")


@dataclass
class DeadLetter:
    seq: int
    description: dict[str, Any]
    value: bytes  # the original queue record

    @property
    def header(self) -> record.RecordHeader:
        return record.decode_header(self.value)

    def body(self) -> bytes:
        return record.decode_body(self.value, self.header, zstandard.ZstdDecompressor())


def put(txn: lmdb.Transaction, db: Any, description: dict[str, Any], value: bytes, now_ms: int) -> int:
    cursor = txn.cursor(db=db)
    seq = _KEY.unpack(cursor.key())[0] + 1 if cursor.last() else 1
    meta = json.dumps(dict(description, time_ms=now_ms), separators=(",", ":"), default=str).encode()
    txn.put(_KEY.pack(seq), _LENGTH.pack(len(meta)) + meta + value, db=db, append=True)
    return seq


def put_back(txn: lmdb.Transaction, db: Any, letter: DeadLetter) -> None:
    """Return a letter taken in this transaction under its own seq, as it was."""
    meta = json.dumps(letter.description, separators=(",", ":"), default=str).encode()
    txn.put(_KEY.pack(letter.seq), _LENGTH.pack(len(meta)) + meta + letter.value, db=db)


def decode(key: bytes | memoryview, value: bytes | memoryview) -> DeadLetter:
    (length,) = _LENGTH.unpack_from(value)
    meta = json.loads(bytes(value[4:4 + length]))
    return DeadLetter(_KEY.unpack(key)[0], meta, bytes(value[4 + length:]))


def scan(txn: lmdb.Transaction, db: Any) -> Iterator[DeadLetter]:
    """Every dead letter in order, one at a time."""
    for key, value in txn.cursor(db=db):
        yield decode(key, value)


def remove(txn: lmdb.Transaction, db: Any, seqs: list[int] | None) -> int:
    """Remove dead letters (all when `seqs` is None) without reading them; how many there were."""
    if seqs is None:
        count = int(txn.stat(db)["entries"])
        txn.drop(db, delete=False)
        return count
    return sum(txn.delete(_KEY.pack(seq), db=db) for seq in seqs)


def take(txn: lmdb.Transaction, db: Any, seqs: list[int] | None) -> list[DeadLetter]:
    """Remove dead letters (all when `seqs` is None) and return them."""
    taken = []
    if seqs is None:
        for key, value in list(txn.cursor(db=db)):
            taken.append(decode(key, value))
        txn.drop(db, delete=False)
        return taken
    for seq in seqs:
        popped = txn.pop(_KEY.pack(seq), db=db)
        if popped is not None:
            taken.append(decode(_KEY.pack(seq), popped))
    return taken
