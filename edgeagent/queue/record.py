"""The on-disk record format of queue entries (see the design note in lmdb_queue.py)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import zstandard

from edgeagent.errors import CorruptRecordError
from edgeagent.signals import Signal

FORMAT_VERSION = 1
CODEC_NONE = 0
CODEC_ZSTD = 1

# version, signal, codec, flags, items, enqueued (unix ms), attempts
_HEADER = struct.Struct(">BBBBIQH")
HEADER_SIZE = _HEADER.size


@dataclass(frozen=True)
class RecordHeader:
    signal: Signal
    items: int
    enqueued_ms: int
    attempts: int
    codec: int


def encode(signal: Signal, items: int, enqueued_ms: int, body: bytes, compressor: zstandard.ZstdCompressor | None,
           attempts: int = 0) -> bytes:
    if compressor is not None:
        return _HEADER.pack(FORMAT_VERSION, signal, CODEC_ZSTD, 0, items, enqueued_ms, attempts) + compressor.compress(body)
    return _HEADER.pack(FORMAT_VERSION, signal, CODEC_NONE, 0, items, enqueued_ms, attempts) + body


def decode_header(value: bytes) -> RecordHeader:
    if len(value) < HEADER_SIZE:
        raise CorruptRecordError(f"record of {len(value)} bytes is shorter than its header")
    version, signal, codec, _flags, items, enqueued_ms, attempts = _HEADER.unpack_from(value)
    if version != FORMAT_VERSION:
        raise CorruptRecordError(f"record format version {version} is not supported (expected {FORMAT_VERSION})")
    if codec not in (CODEC_NONE, CODEC_ZSTD) or signal not in (1, 2, 3):
        raise CorruptRecordError(f"record header is invalid (signal {signal}, codec {codec})")
    return RecordHeader(Signal(signal), items, enqueued_ms, attempts, codec)


def decode_body(value: bytes, header: RecordHeader, decompressor: zstandard.ZstdDecompressor) -> bytes:
    body = memoryview(value)[HEADER_SIZE:]
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
