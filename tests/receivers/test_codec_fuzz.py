"""Fuzzing the codec: any body in any encoding decodes or is refused with a 4xx, never an exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.errors import BadRequestError
from edgeagent.receivers import codec
from edgeagent.signals import Signal
from tests.helpers.hostile import bodies

LIMIT = 256 * 1024
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_all(encoding: str, body: bytes, chunk: int) -> None:
    try:
        decompressor = codec.Decompressor(encoding, LIMIT)
        for start in range(0, len(body), chunk):
            decompressor.feed(body[start:start + chunk])
        plain = decompressor.finish()
        assert len(plain) <= LIMIT
        for signal in Signal:
            for content_type in (codec.PROTOBUF, codec.JSON):
                try:
                    codec.decode(signal, plain, content_type)
                except BadRequestError as refused:
                    assert 400 <= refused.status < 500
    except BadRequestError as refused:
        assert refused.status in (400, 413, 415)


@FUZZ
@given(bodies(), st.integers(1, 4096))
def test_any_body_in_any_encoding_decodes_or_gets_a_4xx(encoded, chunk):
    _decode_all(*encoded, chunk)


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(["gzip", "zstd", "zlib", "deflate", "snappy", "x-snappy-framed",
                                                  "lz4", "none", "br", "GZIP", " zstd ", "x-gzip"]))
def test_garbage_in_any_encoding_gets_a_4xx(body, encoding):
    _decode_all(encoding, body, 512)
