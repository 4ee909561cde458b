"""Bounded decompression of Kafka record batches: otelcol's `max_decompress_batch_bytes`.

Why: aiokafka inflates a compressed record batch whole, with no limit on the output, so a few KB
of zstd or gzip that expand to gigabytes (a compression bomb) would take the agent's memory.
otelcol bounds a batch's decompressed records at `max_decompress_batch_bytes` (franz-go's
MaxDecompressBatchBytes: 1 GiB by default, 1 to 2^31-1; a batch of exactly that many bytes reads).

How: aiokafka's record batch readers (the C ones and the pure-Python ones, format v2 and the
legacy v0/v1) call the module-level names `gzip_decode`, `snappy_decode`, `lz4_decode` and
`zstd_decode` of their own modules. `install()` puts the decoders here in their place. They decode
with receivers/codec.py's Decompressor, which counts the output as it is produced and stops one
piece past the bound, so a batch over it is never inflated whole: what it holds meanwhile is the
bound plus a piece. Such a batch raises `DecompressTooLarge`, a CorruptRecordException, and bytes
that do not decompress raise a plain CorruptRecordException: kafka_fetch.py steps over either.

The bound is a context variable, set by `limit()` around a fetch: aiokafka decompresses while
`getmany` hands records out, in the task that calls it. Outside one, otelcol's default applies.
Stepping over a batch reads it again for each of its offsets; a batch once found too large is
remembered by a digest of its compressed bytes, so it is not inflated up to the bound each time.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import importlib
from collections.abc import Callable, Iterator

import xxhash
from aiokafka.errors import CorruptRecordException

from edgeagent.errors import BadRequestError
from edgeagent.receivers.codec import decompress

DEFAULT_MAX_BYTES = 1 << 30  # otelcol's default
MAX_BYTES = (1 << 31) - 1  # the most otelcol (and franz-go) accept
_LIMIT: contextvars.ContextVar[int] = contextvars.ContextVar("max_decompress_batch_bytes", default=DEFAULT_MAX_BYTES)
_READERS = ("aiokafka.record.default_records", "aiokafka.record.legacy_records",
            "aiokafka.record._crecords.default_records", "aiokafka.record._crecords.legacy_records")
_XERIAL = b"\x82SNAPPY\x00" + (1).to_bytes(4, "big") * 2  # Java's snappy framing, version 1, compatible with 1
_Buffer = bytes | bytearray | memoryview
_REMEMBERED = 64  # batches known to be too large
_too_large: collections.OrderedDict[tuple[str, int, bytes], None] = collections.OrderedDict()


class DecompressTooLarge(CorruptRecordException):
    """A record batch whose records decompress to more than `max_decompress_batch_bytes`."""

    def __init__(self, codec: str, limit: int):
        super().__init__(f"the {codec} record batch decompresses to more than max_decompress_batch_bytes "
                         f"({limit} bytes); it was not decompressed further")


@contextlib.contextmanager
def limit(max_bytes: int) -> Iterator[None]:
    """Bound the batches decompressed in this context (this task) at `max_bytes` each."""
    token = _LIMIT.set(max_bytes)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def install() -> None:
    """Put the bounded decoders in place of aiokafka's in its record batch readers (idempotent)."""
    for name in _READERS:
        try:
            module = importlib.import_module(name)
        except ImportError:  # an aiokafka built without its C extensions
            continue
        for codec, decoder in _DECODERS.items():
            if hasattr(module, f"{codec}_decode"):
                setattr(module, f"{codec}_decode", decoder)


def _decode(codec: str, data: _Buffer) -> bytes:
    """The records of a batch compressed with `codec`, at most the context's bound of them."""
    bound = _LIMIT.get()
    compressed = bytes(data)  # aiokafka's C readers pass a view of their buffer, valid during the call only
    key = (codec, bound, xxhash.xxh3_128_digest(compressed))
    if key in _too_large:
        _too_large.move_to_end(key)
        raise DecompressTooLarge(codec, bound)
    try:
        if codec == "snappy" and len(compressed) > len(_XERIAL) and compressed.startswith(_XERIAL):
            return _xerial(compressed, bound)
        return decompress(codec, compressed, bound)
    except BadRequestError as exc:
        if exc.status != 413:
            raise CorruptRecordException(f"the {codec} record batch does not decompress: {exc}") from exc
        _too_large[key] = None
        while len(_too_large) > _REMEMBERED:
            _too_large.popitem(last=False)
        raise DecompressTooLarge(codec, bound) from None


def _xerial(data: bytes, bound: int) -> bytes:
    """Snappy as Java's client frames it (aiokafka reads it too): the header, then blocks, each a
    big-endian length and a raw snappy block; each block is held to what is left of the bound."""
    parts: list[bytes] = []
    size = 0
    pos = len(_XERIAL)
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big", signed=True)
        pos += 4
        if length <= 0 or pos + length > len(data):
            raise BadRequestError("a snappy block is cut short")
        parts.append(decompress("snappy", data[pos:pos + length], bound - size))
        size += len(parts[-1])
        pos += length
    return b"".join(parts)


def _decoder(codec: str) -> Callable[[_Buffer], bytes]:
    def decode(data: _Buffer) -> bytes:
        return _decode(codec, data)

    decode.__name__ = decode.__qualname__ = f"{codec}_decode"
    return decode


_DECODERS = {codec: _decoder(codec) for codec in ("gzip", "snappy", "lz4", "zstd")}
