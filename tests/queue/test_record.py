"""The queue record format: header fields, and attributes that are added when a record is read."""

from __future__ import annotations

import asyncio

import pytest
import zstandard
from opentelemetry.proto.common.v1.common_pb2 import KeyValue, KeyValueList

from edgeagent.errors import CorruptRecordError
from edgeagent.processors.actions import to_any_value
from edgeagent.processors.attributes import records
from edgeagent.queue import record
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal
from tests.processors.tables import log_request, span_request

ATTRIBUTES = KeyValueList(values=[KeyValue(key="tenant", value=to_any_value("acme")),
                                  KeyValue(key="site", value=to_any_value(7))]).SerializeToString()


def _with_attributes(signal, request):
    expected = type(request)()
    expected.CopyFrom(request)
    for item in records(signal, expected):
        item.attributes.extend(KeyValueList.FromString(ATTRIBUTES).values)
    return expected


@pytest.mark.parametrize("codec", [record.CODEC_NONE, record.CODEC_ZSTD], ids=["plain", "zstd"])
def test_attributes_in_a_record_are_added_to_every_span_when_it_is_read(codec):
    request = span_request([{"attrs": [("a", 1)]}, {"attrs": []}], resource=[("r", "1")])
    body = request.SerializeToString()
    payload = zstandard.ZstdCompressor().compress(body) if codec == record.CODEC_ZSTD else body
    value = record.frame(Signal.TRACES, 2, 1234, payload, codec, batch_key=b"tenant-a", attributes=ATTRIBUTES)
    header = record.decode_header(value)
    assert (header.items, header.enqueued_ms, header.batch_key, header.attributes) == (2, 1234, b"tenant-a", ATTRIBUTES)
    read = record.decode_body(value, header, zstandard.ZstdDecompressor())
    assert type(request).FromString(read) == _with_attributes(Signal.TRACES, request)


def test_a_record_without_attributes_reads_back_byte_for_byte():
    body = span_request([{"attrs": [("a", 1)]}]).SerializeToString()
    value = record.frame(Signal.TRACES, 1, 0, body, record.CODEC_NONE)
    header = record.decode_header(value)
    assert header.attributes == b"" and record.decode_body(value, header, zstandard.ZstdDecompressor()) == body


def test_a_new_attempt_count_keeps_the_attributes():
    request = log_request([{"body": "hello"}])
    value = record.frame(Signal.LOGS, 1, 0, request.SerializeToString(), record.CODEC_NONE, attributes=ATTRIBUTES)
    retried = record.with_attempts(value, 3)
    header = record.decode_header(retried)
    assert header.attempts == 3
    read = type(request).FromString(record.decode_body(retried, header, zstandard.ZstdDecompressor()))
    assert read == _with_attributes(Signal.LOGS, request)


@pytest.mark.parametrize("cut", [1, 4, 10], ids=["in the length", "after the length", "in the attributes"])
def test_a_record_cut_inside_its_attributes_is_corrupt(cut):
    value = record.frame(Signal.TRACES, 1, 0, b"", record.CODEC_NONE, attributes=ATTRIBUTES)
    with pytest.raises(CorruptRecordError, match="attributes"):
        record.decode_header(value[:record.HEADER_SIZE + cut])


def test_attributes_that_do_not_fit_the_request_make_the_record_corrupt():
    value = record.frame(Signal.TRACES, 1, 0, b"\xff\xff not a request", record.CODEC_NONE, attributes=ATTRIBUTES)
    with pytest.raises(CorruptRecordError, match="not a valid traces request"):
        record.decode_body(value, record.decode_header(value), zstandard.ZstdDecompressor())


def test_unknown_flags_are_refused():
    value = bytearray(record.frame(Signal.TRACES, 1, 0, b"", record.CODEC_NONE))
    value[3] = 4
    with pytest.raises(CorruptRecordError, match="flags 4"):
        record.decode_header(bytes(value))


def test_a_queue_hands_out_requests_with_their_attributes_added(tmp_path):
    request = span_request([{"attrs": [("a", 1)]}])

    async def scenario() -> list[bytes]:
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        await store.put([queue], request.SerializeToString(), 1, Signal.TRACES, attributes=ATTRIBUTES)
        lease = await queue.lease(max_items=10)
        await store.close()
        return lease.bodies

    [body] = asyncio.run(scenario())
    assert type(request).FromString(body) == _with_attributes(Signal.TRACES, request)


def test_the_stamp_read_alone_is_the_headers_enqueue_time_and_nothing_for_another_format():
    """A clock step scans a backlog's stamps from the header's bytes alone (clocksteps.py): reading
    the wrong bytes would shift records by nonsense."""
    value = record.frame(Signal.LOGS, 3, 1_796_000_123_456, b"payload", record.CODEC_NONE, attempts=9,
                         batch_key=b"tenant=a", attributes=ATTRIBUTES)
    assert record.stamp(value) == record.decode_header(value).enqueued_ms == 1_796_000_123_456
    assert record.stamp(memoryview(value)) == 1_796_000_123_456
    assert record.stamp(bytes([record.FORMAT_VERSION + 1]) + value[1:]) == 0
    assert record.stamp(value[:record.HEADER_SIZE - 1]) == 0
