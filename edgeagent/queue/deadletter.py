"""The dead-letter store: batches the upstream rejected permanently, kept with its answer.

Key layout: sub-database `deadletter`, key an 8-byte big-endian sequence, value a 4-byte
length, a JSON description (queue, exporter, status, reason, the upstream's response,
time_ms) and the original queue record. Entries leave only by replay (moved back to their
queue a bounded run at a time, each letter deleted in the transaction that queues it) or purge.
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
    """One dead letter: its sequence number, why it was set aside, and the original record."""

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


def last_seq(txn: lmdb.Transaction, db: Any) -> int:
    """The seq of the newest dead letter (0: none)."""
    cursor = txn.cursor(db=db)
    return int(_KEY.unpack(cursor.key())[0]) if cursor.last() else 0


def run_from(txn: lmdb.Transaction, db: Any, first: int, last: int, records: int, size: int) -> list[DeadLetter]:
    """The dead letters from seq `first` to `last`, in order: `records` of them at most, and no more
    once they hold `size` bytes (at least one, however large)."""
    letters: list[DeadLetter] = []
    held = 0
    cursor = txn.cursor(db=db)
    if not cursor.set_range(_KEY.pack(first)):
        return letters
    for key, value in cursor.iternext():
        if _KEY.unpack(key)[0] > last or len(letters) == records or (letters and held >= size):
            break
        letters.append(decode(key, value))
        held += len(value)
    return letters


def some_of(txn: lmdb.Transaction, db: Any, seqs: list[int], records: int, size: int) -> tuple[list[DeadLetter], int]:
    """The dead letters of the first of `seqs` (those there), within the same bounds as `run_from`;
    and how many of `seqs` were looked up."""
    letters: list[DeadLetter] = []
    held = looked = 0
    for seq in seqs:
        if looked == records or (letters and held >= size):
            break
        looked += 1
        value = txn.get(_KEY.pack(seq), db=db)
        if value is not None:
            letters.append(decode(_KEY.pack(seq), value))
            held += len(value)
    return letters, looked


def delete(txn: lmdb.Transaction, db: Any, letter: DeadLetter) -> None:
    txn.delete(_KEY.pack(letter.seq), db=db)
