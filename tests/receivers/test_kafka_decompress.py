"""max_decompress_batch_bytes inside aiokafka's own record batch readers (the C ones and the pure-Python
ones, format v2 and the legacy v0/v1), on batches aiokafka's own builders compress."""

from __future__ import annotations

import tracemalloc

import cramjam
import pytest
import zstandard
from aiokafka.errors import CorruptRecordException
from aiokafka.record import _crecords, default_records, legacy_records

from edgeagent.receivers import kafka_decompress
from edgeagent.receivers.kafka_decompress import DecompressTooLarge

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
# each record: 2 KB that compress well, and a part no codec shrinks, so every output chunk is met
VALUES = [bytes(2000) + i.to_bytes(4, "big") * 50 for i in range(40)]
V2 = {"c": (_crecords.DefaultRecordBatchBuilder, _crecords.DefaultRecordBatch),
      "python": (default_records._DefaultRecordBatchBuilderPy, default_records._DefaultRecordBatchPy)}


def _v2_batch(implementation: str, codec: str) -> tuple[bytes, int]:
    """A compressed v2 batch of VALUES, and the size of its records once decompressed."""
    builder_class, _ = V2[implementation]
    builder = builder_class(magic=2, compression_type=CODECS[codec], is_transactional=0, producer_id=-1,
                            producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    plain = builder_class(magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
                          base_sequence=-1, batch_size=1 << 20)
    for offset, value in enumerate(VALUES):
        for each in (builder, plain):
            each.append(offset, timestamp=1, key=None, value=value, headers=[])
    records = len(plain.build()) - 61  # the v2 header
    batch = bytes(builder.build())
    assert len(batch) < records // 2, "the batch went uncompressed"
    return batch, records


def _values(implementation: str, batch: bytes, limit: int) -> list[bytes]:
    _, batch_class = V2[implementation]
    with kafka_decompress.limit(limit):
        return [record.value for record in batch_class(batch)]


@pytest.fixture(autouse=True)
def _installed():
    kafka_decompress.install()


@pytest.mark.parametrize("implementation", list(V2))
@pytest.mark.parametrize("codec", list(CODECS))
def test_a_batch_up_to_the_bound_reads_and_one_byte_past_it_is_refused(implementation, codec):
    """The bound counts the decompressed records, as franz-go's MaxDecompressBatchBytes: a batch of
    exactly that many reads whole."""
    batch, size = _v2_batch(implementation, codec)
    assert _values(implementation, batch, size) == VALUES
    with pytest.raises(DecompressTooLarge, match="max_decompress_batch_bytes"):
        _values(implementation, batch, size - 1)


def test_otelcols_default_bound_applies_outside_a_fetch():
    batch, _ = _v2_batch("c", "zstd")
    assert [record.value for record in _crecords.DefaultRecordBatch(batch)] == VALUES
    assert kafka_decompress.DEFAULT_MAX_BYTES == 1 << 30


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4"])
def test_a_legacy_message_set_is_bounded_too(codec):
    builder = legacy_records.LegacyRecordBatchBuilder(magic=1, compression_type=CODECS[codec], batch_size=1 << 20)
    for offset, value in enumerate(VALUES):
        builder.append(offset, timestamp=1, key=None, value=value)
    batch = bytes(builder.build())
    with kafka_decompress.limit(1 << 20):
        assert [record.value for record in legacy_records.LegacyRecordBatch(batch, 1)] == VALUES
    with kafka_decompress.limit(4096), pytest.raises(DecompressTooLarge):
        list(legacy_records.LegacyRecordBatch(batch, 1))


@pytest.mark.parametrize("codec", list(CODECS))
def test_bytes_that_do_not_decompress_are_a_corrupt_batch_not_one_too_large(codec):
    batch = bytearray(_v2_batch("python", codec)[0])
    batch[61:] = bytes(len(batch) - 61)  # the compressed records zeroed
    with pytest.raises(CorruptRecordException) as raised:
        _values("python", bytes(batch), 1 << 20)
    assert not isinstance(raised.value, DecompressTooLarge)


def test_snappy_as_a_raw_block_is_bounded_too(monkeypatch):
    """librdkafka writes snappy as one raw block, Java in xerial's framing (aiokafka's default)."""
    monkeypatch.setattr(default_records, "snappy_encode", lambda data: bytes(cramjam.snappy.compress_raw(data)))
    batch, size = _v2_batch("python", "snappy")
    assert not batch[61:].startswith(b"\x82SNAPPY")
    assert _values("python", batch, size) == VALUES
    with pytest.raises(DecompressTooLarge):
        _values("python", batch, size - 1)


def _peak_growth(action) -> int:
    """How far the Python allocations' peak rose above what they held before `action()`: the
    decompressed pieces are bytes objects. (Not the process's RSS: a worker that ran other tests
    first may hold freed memory that the inflation reuses, and its peak then hardly moves.)"""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        action()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_a_batch_found_too_large_is_not_inflated_again_when_met_again():
    """Stepping over a batch reads it once per offset: each read inflated it up to the bound again."""
    packer = zstandard.ZstdCompressor(level=3).compressobj()
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(1024)) + packer.flush()  # 1 GiB of zeros
    header = bytearray(_v2_batch("c", "zstd")[0][:61])
    header[8:12] = (len(header) - 12 + len(bomb)).to_bytes(4, "big")  # the batch length after it

    def read() -> None:
        with pytest.raises(DecompressTooLarge):
            _values("c", bytes(header) + bomb, 64 << 20)

    first, again = _peak_growth(read), _peak_growth(read)
    assert first >= 60 << 20, f"the first read took {first >> 20} MiB"  # inflated up to the bound, then freed
    assert again < 8 << 20, f"reading it again took {again >> 20} MiB"
