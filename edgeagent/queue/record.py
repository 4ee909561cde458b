"""The on-disk record format of queue entries (see the design note in lmdb_queue.py).

    header (18 bytes): version, signal, codec, flags, items, enqueued (unix ms), attempts
    [flags & FLAG_BATCH_KEY: 2-byte length + batch key]   the batch processor's metadata_keys values
    payload: the serialized export request, zstd-compressed when codec is 1
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import zstandard

from edgeagent.errors import CorruptRecordError
from edgeagent.signals import Signal

FORMAT_VERSION = 1
CODEC_NONE = 0
CODEC_ZSTD = 1
FLAG_BATCH_KEY = 1

_HEADER = struct.Struct(">BBBBIQH")
_KEY_LENGTH = struct.Struct(">H")
HEADER_SIZE = _HEADER.size


@dataclass(frozen=True)
class RecordHeader:
    signal: Signal
    items: int
    enqueued_ms: int
    attempts: int
    codec: int
    batch_key: bytes
    body_offset: int


def encode(signal: Signal, items: int, enqueued_ms: int, body: bytes, compressor: zstandard.ZstdCompressor | None,
           attempts: int = 0, batch_key: bytes = b"") -> bytes:
    if compressor is None:
        return frame(signal, items, enqueued_ms, body, CODEC_NONE, attempts, batch_key)
    return frame(signal, items, enqueued_ms, compressor.compress(body), CODEC_ZSTD, attempts, batch_key)


def frame(signal: Signal, items: int, enqueued_ms: int, payload: bytes, codec: int, attempts: int = 0,
          batch_key: bytes = b"") -> bytes:
    """A record around a payload that is already in its codec's form."""
    flags = FLAG_BATCH_KEY if batch_key else 0
    head = _HEADER.pack(FORMAT_VERSION, signal, codec, flags, items, enqueued_ms, attempts)
    if batch_key:
        head += _KEY_LENGTH.pack(len(batch_key)) + batch_key
    return head + payload


def decode_header(value: bytes) -> RecordHeader:
    if len(value) < HEADER_SIZE:
        raise CorruptRecordError(f"record of {len(value)} bytes is shorter than its header")
    version, signal, codec, flags, items, enqueued_ms, attempts = _HEADER.unpack_from(value)
    if version != FORMAT_VERSION:
        raise CorruptRecordError(f"record format version {version} is not supported (expected {FORMAT_VERSION})")
    if codec not in (CODEC_NONE, CODEC_ZSTD) or signal not in (1, 2, 3) or flags & ~FLAG_BATCH_KEY:
        raise CorruptRecordError(f"record header is invalid (signal {signal}, codec {codec}, flags {flags})")
    offset = HEADER_SIZE
    batch_key = b""
    if flags & FLAG_BATCH_KEY:
        if len(value) < offset + _KEY_LENGTH.size:
            raise CorruptRecordError("record is shorter than its batch key")
        (length,) = _KEY_LENGTH.unpack_from(value, offset)
        offset += _KEY_LENGTH.size
        batch_key = bytes(value[offset:offset + length])
        offset += length
    return RecordHeader(Signal(signal), items, enqueued_ms, attempts, codec, batch_key, offset)


def decode_body(value: bytes, header: RecordHeader, decompressor: zstandard.ZstdDecompressor) -> bytes:
    body = memoryview(value)[header.body_offset:]
    if header.codec == CODEC_NONE:
        return bytes(body)
    try:
        return decompressor.decompress(body)
    except zstandard.ZstdError as exc:
        raise CorruptRecordError(f"record payload does not decompress: {exc}") from exc


def with_attempts(value: bytes, attempts: int) -> bytes:
    """The same record with its attempt counter replaced."""
    header = bytearray(value[:HEADER_SIZE])
    struct.pack_into(">H", header, HEADER_SIZE - 2, min(attempts, 0xFFFF))
    return bytes(header) + value[HEADER_SIZE:]
