"""h2_limits' HPACK decoder against hpack's own, on the same blocks."""

from __future__ import annotations

import hpack
import pytest

from edgeagent.receivers import h2_limits

FIELDS = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/x"), (b":authority", b"a"),
          (b"small", b"v"), (b"edge", b"y" * 4090), (b"past-the-window", b"z" * 4100), (b"large", b"w" * 20000),
          hpack.NeverIndexedHeaderTuple(b"secret", b"s" * 5000), (b"small", b"v")]


@pytest.mark.parametrize("huffman", [True, False])
def test_blocks_decode_as_hpack_decodes_them_with_fields_across_the_literal_window(huffman):
    encoder, ours, theirs = hpack.Encoder(), h2_limits.HeaderListBound(1 << 20), hpack.Decoder(1 << 20)
    for _ in range(3):  # later blocks refer to the table entries earlier ones added
        block = encoder.encode(FIELDS, huffman=huffman)
        assert ours.decode(block, raw=True) == theirs.decode(block, raw=True)
    assert list(ours.header_table.dynamic_entries) == list(theirs.header_table.dynamic_entries)


def test_a_list_over_the_limit_is_a_stand_in_and_the_table_still_follows_the_peers():
    encoder, ours, theirs = hpack.Encoder(), h2_limits.HeaderListBound(8 << 10), hpack.Decoder(1 << 20)
    block = encoder.encode(FIELDS)
    stand_in = ours.decode(block, raw=True)
    theirs.decode(block, raw=True)
    assert stand_in[-1] == (h2_limits.OVERSIZED, b"") and (b":path", b"/") in stand_in
    assert list(ours.header_table.dynamic_entries) == list(theirs.header_table.dynamic_entries)
    assert ours.decode(encoder.encode([(b"small", b"v")]), raw=True) == [(b"small", b"v")]
    trailers = encoder.encode([(b"late", b"t" * (10 << 10))])  # no pseudo-header: a trailers stand-in
    assert ours.decode(trailers, raw=True) == [(h2_limits.OVERSIZED, b"")]


def test_a_broken_field_is_still_an_error():
    block = bytearray(hpack.Encoder().encode([(b"large", b"w" * 20000)], huffman=False))
    with pytest.raises(hpack.HPACKDecodingError):
        h2_limits.HeaderListBound(1 << 20).decode(bytes(block[:-1]), raw=True)  # cut one byte short


@pytest.mark.parametrize("value", [b"", b"a", b"grpc-status", bytes(range(256)), bytes(range(256))[::-1] * 7,
                                   b"\xff" * 1001, b"unknown method /x%C3%BF"])
def test_the_linear_huffman_coder_codes_as_hpacks_own(value):
    theirs = hpack.Encoder().huffman_coder.encode(value)
    assert h2_limits.LinearHuffman().encode(value) == theirs
    if value:
        assert hpack.huffman_table.decode_huffman(theirs) == value


def test_the_encoder_keeps_a_4_kib_table_whatever_the_peer_allows_and_says_so():
    encoder, decoder = h2_limits.BoundedEncoder(), hpack.Decoder()
    decoder.max_allowed_table_size = 1 << 30
    encoder.header_table_size = 1 << 30
    fields = [(b"grpc-message", b"m" * 3000), (b"other", b"o" * 3000)]
    assert decoder.decode(encoder.encode(fields), raw=True) == fields
    assert decoder.header_table.maxsize == encoder.header_table.maxsize == 4096
    encoder.header_table_size = 0  # lowered below the default, it follows
    assert decoder.decode(encoder.encode(fields), raw=True) == fields
    assert decoder.header_table.maxsize == 0


def test_a_block_of_more_fields_than_a_list_within_the_limit_holds_is_refused_at_that_count():
    limit = 8 << 10
    block = hpack.Encoder().encode([(b":path", b"/")], huffman=False)
    most = block + b"\x41\x00" * (limit // 32 - 1)  # :authority "", each counted 42 bytes: over the limit
    assert h2_limits.HeaderListBound(limit).decode(most, raw=True)[-1] == (h2_limits.OVERSIZED, b"")
    with pytest.raises(hpack.OversizedHeaderListError):
        h2_limits.HeaderListBound(limit).decode(most + b"\x41\x00", raw=True)


def test_a_block_of_countless_fields_is_decoded_to_its_end_when_fields_are_not_counted():
    block = hpack.Encoder().encode([(b":path", b"/")], huffman=False) + b"\x41\x00" * 1000
    assert h2_limits.HeaderListBound(8 << 10, count_fields=False).decode(block, raw=True)[-1] == \
        (h2_limits.OVERSIZED, b"")


def test_the_encoder_signals_the_smallest_table_size_since_its_last_block_then_the_last():
    encoder, decoder = h2_limits.BoundedEncoder(), hpack.Decoder()
    decoder.decode(encoder.encode([(b"kept", b"k")]), raw=True)
    for size in (2048, 0, 4096, 1024, 4096) * 1000:
        encoder.header_table_size = size
    block = encoder.encode([(b"grpc-status", b"0")])
    assert block.startswith(b"\x20\x3f\xe1\x1f")  # 0, then 4096 (5-bit prefix integers)
    assert decoder.decode(block, raw=True) == [(b"grpc-status", b"0")]
    assert list(decoder.header_table.dynamic_entries) == [(b"grpc-status", b"0")]  # "kept" was evicted by 0


def test_a_table_size_change_is_signalled_though_the_peer_repeats_its_setting_before_the_next_block():
    # h2 sets the size for each SETTINGS frame naming it, changed or not: a repeated (or a larger,
    # still 4 KiB) setting left the change unsignalled, and the peer's decoder, still at 100 bytes,
    # met indexes of entries it had evicted
    encoder, decoder = h2_limits.BoundedEncoder(), hpack.Decoder()
    decoder.max_allowed_table_size = 65536
    encoder.header_table_size = 100
    assert decoder.decode(encoder.encode([(b"grpc-status", b"0")]), raw=True) == [(b"grpc-status", b"0")]
    encoder.header_table_size = 65536
    encoder.header_table_size = 8192
    fields = [(b"x-%d" % i, b"v" * 60) for i in range(3)]
    for _ in range(3):
        assert decoder.decode(encoder.encode(fields), raw=True) == fields
    assert decoder.header_table.maxsize == encoder.header_table.maxsize == 4096
