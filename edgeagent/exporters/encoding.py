"""Request body compression for exporters, with otelcol's names (confighttp / configcompression).

`deflate` and `zlib` both send the zlib format, `snappy` the block format (otelcol's
confighttp.framedSnappy gate, on by default) and `lz4` the frame format, as otelcol does.
gRPC messages (`grpc_compress`) take gzip, zstd and snappy, snappy in the framing format as
configgrpc's snappy codec writes it.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import cramjam
import zstandard


def _zstd(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(body)


_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda body: gzip.compress(body, 1),
    "zstd": _zstd,
    "deflate": lambda body: zlib.compress(body, 1),
    "zlib": lambda body: zlib.compress(body, 1),
    "snappy": lambda body: bytes(cramjam.snappy.compress_raw(body)),
    "lz4": lambda body: bytes(cramjam.lz4.compress(body)),
}
HTTP_ENCODINGS = tuple(_COMPRESSORS)


def compress(encoding: str, body: bytes) -> bytes:
    """`body` compressed with `encoding` (one of HTTP_ENCODINGS)."""
    return _COMPRESSORS[encoding](body)


# gRPC's encodings as otelcol's configgrpc registers them: snappy is the framing format there
_GRPC_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _COMPRESSORS["gzip"],
    "zstd": _zstd,
    "snappy": lambda body: bytes(cramjam.snappy.compress(body)),
}
GRPC_ENCODINGS = tuple(_GRPC_COMPRESSORS)


def grpc_compress(encoding: str, body: bytes) -> bytes:
    """A gRPC message compressed with `encoding` (one of GRPC_ENCODINGS)."""
    return _GRPC_COMPRESSORS[encoding](body)
