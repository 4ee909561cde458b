"""Request body compression for exporters, with otelcol's names (confighttp / configcompression).

`deflate` and `zlib` both send the zlib format, `snappy` the block format (otelcol's
confighttp.framedSnappy gate, on by default), `x-snappy-framed` the framing format and `lz4` the
frame format, as otelcol does. Without a level, gzip, zlib and deflate use level 1 (or its size:
below) and zstd level 3 (edgeagent's choice; otelcol's are 6 and 1). A level (`compression_params::level`) is
taken as otelcol takes it: zlib's -1 (its default, 6), -2 (Huffman only) or 1-9 for gzip, zlib
and deflate; for zstd any level, in the four steps of otelcol's encoder (below 3: level 1, below
6: 3, below 10: 7, else 11).

gzip, zlib and deflate are written by zlib-ng where it is installed (its wheels: x86_64 and
aarch64), else by the standard library's zlib; the formats are the same. zlib-ng's levels trade
size for speed differently: its level 1 is about 8 % larger than zlib's, its level 2 the size of
zlib's level 1 in half the time (a drained batch of 12,288 spans: 9.9 against 18.1 ms). So the
default is level 2 with zlib-ng, which sends what zlib's level 1 sent, faster; a level written
in the config is zlib-ng's where it is installed.
gRPC messages (`grpc_compress`) take gzip, zstd and snappy, snappy in the framing format as
configgrpc's snappy codec writes it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from types import ModuleType

import zstandard

_deflate: ModuleType
try:
    from zlib_ng import zlib_ng as _deflate
except ImportError:  # no wheel for this machine
    _deflate = zlib
# the default level: what zlib's level 1 makes, zlib-ng's level 2 makes in half the time
DEFAULT_DEFLATE_LEVEL = 1 if _deflate is zlib else 2


def _zstd(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(body)


# cramjam is imported with the first snappy or lz4 body: importing it cost every start 1 ms
def _snappy_block(body: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.compress_raw(body))


def _snappy_framed(body: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.compress(body))


def _lz4(body: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.lz4.compress(body))


_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda body: _deflate.compress(body, DEFAULT_DEFLATE_LEVEL, wbits=31),
    "zstd": _zstd,
    "deflate": lambda body: _deflate.compress(body, DEFAULT_DEFLATE_LEVEL),
    "zlib": lambda body: _deflate.compress(body, DEFAULT_DEFLATE_LEVEL),
    "snappy": _snappy_block,
    "lz4": _lz4,
    "x-snappy-framed": _snappy_framed,
}
HTTP_ENCODINGS = tuple(_COMPRESSORS)
_ZLIB_WBITS = {"gzip": 31, "zlib": 15, "deflate": 15}


def compress(encoding: str, body: bytes, level: int = 0) -> bytes:
    """`body` compressed with `encoding` (one of HTTP_ENCODINGS) at `level` (0: the default; a level
    otelcol's configcompression accepts for that encoding)."""
    if level == 0:
        return _COMPRESSORS[encoding](body)
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=1 if level < 3 else 3 if level < 6 else 7 if level < 10 else 11
                                        ).compress(body)
    compressor: zlib._Compress  # zlib-ng's has the same methods
    if level == -2:
        compressor = _deflate.compressobj(-1, zlib.DEFLATED, _ZLIB_WBITS[encoding], 8, zlib.Z_HUFFMAN_ONLY)
    else:
        compressor = _deflate.compressobj(level, zlib.DEFLATED, _ZLIB_WBITS[encoding])
    return compressor.compress(body) + compressor.flush()


# gRPC's encodings as otelcol's configgrpc registers them: snappy is the framing format there
_GRPC_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _COMPRESSORS["gzip"],
    "zstd": _zstd,
    "snappy": _snappy_framed,
}
GRPC_ENCODINGS = tuple(_GRPC_COMPRESSORS)


def grpc_compress(encoding: str, body: bytes) -> bytes:
    """A gRPC message compressed with `encoding` (one of GRPC_ENCODINGS)."""
    return _GRPC_COMPRESSORS[encoding](body)
