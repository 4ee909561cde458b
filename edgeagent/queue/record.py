"""The on-disk record format of queue entries (see the design note in store.py).

    header (18 bytes): version, signal, codec, flags, items, enqueued (unix ms), attempts
    [flags & FLAG_BATCH_KEY: 2-byte length + batch key]   the batch processor's metadata_keys values
    [flags & FLAG_ATTRIBUTES: 4-byte length + KeyValueList] attributes still to be added to every record
    payload: the serialized export request, zstd-compressed when codec is 1

FLAG_ATTRIBUTES carries the attributes processor's constant attributes next to the request as
the client sent it (see Payload.defer_attributes): adding them to every span costs a fifth of an
ingest's CPU, so it is done when the record is read, by `decode_body`, for every reader alike.
Versions before the flag existed move such records to the dead-letter store as corrupt.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import zstandard
from google.protobuf.message import DecodeError

from edgeagent.appender import append_attributes
from edgeagent.errors import CorruptRecordError
from edgeagent.signals import Signal

FORMAT_VERSION = 1
CODEC_NONE = 0
CODEC_ZSTD = 1
FLAG_BATCH_KEY = 1
FLAG_ATTRIBUTES = 2
_FLAGS = FLAG_BATCH_KEY | FLAG_ATTRIBUTES

_HEADER = struct.Struct(">BBBBIQH")
_STAMP = struct.Struct(">BxxxxxxxQ")  # the header's version and enqueue time
_KEY_LENGTH = struct.Struct(">H")
MAX_BATCH_KEY = (1 << 8 * _KEY_LENGTH.size) - 1  # bytes a record's batch key may take
_ATTRIBUTES_LENGTH = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


@dataclass(frozen=True)
class RecordHeader:
    """The fields of a record's header (the layout in this module's docstring), and where its body starts."""

    signal: Signal
    items: int
    enqueued_ms: int
    attempts: int
    codec: int
    batch_key: bytes
    body_offset: int
    attributes: bytes = b""


def compressor(level: int) -> zstandard.ZstdCompressor:
    """The compressor for queue payloads: each frame carries a checksum, so a bit flip on disk
    is found when the record is read (as CorruptRecordError) instead of reaching the upstream."""
    return zstandard.ZstdCompressor(level=level, write_checksum=True)


def age_seconds(enqueued_ms: float, now_ms: float) -> float:
    """Seconds since `enqueued_ms` (0 for none), never below zero: a record written while the clock
    was ahead (set back since) is new, not of negative age."""
    return max(0.0, round((now_ms - enqueued_ms) / 1000, 3)) if enqueued_ms else 0.0


def stamp(value: bytes | memoryview) -> int:
    """A record's enqueue time (unix ms) read from its header alone, for scans over many records;
    0 for a record of another format or shorter than its header."""
    if len(value) < HEADER_SIZE:
        return 0
    version, enqueued = _STAMP.unpack_from(value)
    return int(enqueued) if version == FORMAT_VERSION else 0


def encode(signal: Signal, items: int, enqueued_ms: int, body: bytes, compressor: zstandard.ZstdCompressor | None,
           attempts: int = 0, batch_key: bytes = b"") -> bytes:
    if compressor is None:
        return frame(signal, items, enqueued_ms, body, CODEC_NONE, attempts, batch_key)
    return frame(signal, items, enqueued_ms, compressor.compress(body), CODEC_ZSTD, attempts, batch_key)


def frame(signal: Signal, items: int, enqueued_ms: int, payload: bytes, codec: int, attempts: int = 0,
          batch_key: bytes = b"", attributes: bytes = b"") -> bytes:
    """A record around a payload that is already in its codec's form."""
    flags = (FLAG_BATCH_KEY if batch_key else 0) | (FLAG_ATTRIBUTES if attributes else 0)
    head = _HEADER.pack(FORMAT_VERSION, signal, codec, flags, items, enqueued_ms, attempts)
    if batch_key:
        head += _KEY_LENGTH.pack(len(batch_key)) + batch_key
    if attributes:
        head += _ATTRIBUTES_LENGTH.pack(len(attributes)) + attributes
    return head + payload


def decode_header(value: bytes | memoryview) -> RecordHeader:
    if len(value) < HEADER_SIZE:
        raise CorruptRecordError(f"record of {len(value)} bytes is shorter than its header")
    version, signal, codec, flags, items, enqueued_ms, attempts = _HEADER.unpack_from(value)
    if version != FORMAT_VERSION:
        raise CorruptRecordError(f"record format version {version} is not supported (expected {FORMAT_VERSION})")
    if codec not in (CODEC_NONE, CODEC_ZSTD) or signal not in (1, 2, 3) or flags & ~_FLAGS:
        raise CorruptRecordError(f"record header is invalid (signal {signal}, codec {codec}, flags {flags})")
    offset = HEADER_SIZE
    batch_key = attributes = b""
    if flags & FLAG_BATCH_KEY:
        batch_key, offset = _field(value, offset, _KEY_LENGTH, "batch key")
    if flags & FLAG_ATTRIBUTES:
        attributes, offset = _field(value, offset, _ATTRIBUTES_LENGTH, "attributes")
    return RecordHeader(Signal(signal), items, enqueued_ms, attempts, codec, batch_key, offset, attributes)


def _field(value: bytes | memoryview, offset: int, length_format: struct.Struct, name: str) -> tuple[bytes, int]:
    """A length-prefixed header field at `offset`, and the offset after it."""
    if len(value) < offset + length_format.size:
        raise CorruptRecordError(f"record is shorter than its {name}")
    (length,) = length_format.unpack_from(value, offset)
    offset += length_format.size
    if len(value) < offset + length:
        raise CorruptRecordError(f"record is shorter than its {name}")
    return bytes(value[offset:offset + length]), offset + length


def decode_body(value: bytes | memoryview, header: RecordHeader, decompressor: zstandard.ZstdDecompressor) -> bytes:
    """The export request of a record, with the attributes it carries added to every record."""
    body = memoryview(value)[header.body_offset:]
    if header.codec == CODEC_NONE:
        request = bytes(body)
    else:
        try:
            request = decompressor.decompress(body)
        except zstandard.ZstdError as exc:
            raise CorruptRecordError(f"record payload does not decompress: {exc}") from exc
    if not header.attributes:
        return request
    try:
        return append_attributes(header.signal.shape, request, header.attributes)
    except DecodeError as exc:
        raise CorruptRecordError(f"record payload is not a valid {header.signal.label} request: {exc}") from exc


def with_attempts(value: bytes | memoryview, attempts: int) -> bytes:
    """The same record with its attempt counter replaced."""
    header = bytearray(value[:HEADER_SIZE])
    struct.pack_into(">H", header, HEADER_SIZE - 2, min(attempts, 0xFFFF))
    return bytes(header) + value[HEADER_SIZE:]
