"""Trace ids and times read in C by a second, lite parse: what protobuf reads, or nothing."""

from __future__ import annotations

import random
import struct

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel.wire import length_delimited, varint
from sampler.lite import LiteRequest
from sampler.split import Facts, split_body


def _span(rng: random.Random) -> tuple[bytes, str]:
    """A serialized span, canonical most of the time; else one way a writer may differ."""
    trace_id, start, end = rng.randbytes(16), rng.randrange(1, 1 << 62), rng.randrange(1, 1 << 62)
    name = length_delimited(5, b"GET /" + bytes(rng.randrange(0, 300)))
    times = b"\x39" + struct.pack("<Q", start) + b"\x41" + struct.pack("<Q", end)
    kind = rng.choice(["canonical", "canonical", "id repeated", "short id", "no start", "out of order", "unknown"])
    if kind == "id repeated":  # the last wins
        return length_delimited(1, rng.randbytes(16)) + name + length_delimited(1, trace_id) + times, kind
    if kind == "short id":
        return length_delimited(1, trace_id[:8]) + name + times, kind
    if kind == "no start":
        return length_delimited(1, trace_id) + name + b"\x41" + struct.pack("<Q", end), kind
    if kind == "out of order":
        return times + name + length_delimited(1, trace_id), kind
    unknown = varint(99 << 3) + varint(7) if kind == "unknown" else b""
    return length_delimited(1, trace_id) + name + times + unknown, kind


@pytest.mark.parametrize("with_times", [False, True])
def test_lite_reads_what_protobuf_reads_or_declines(with_times: bool) -> None:
    rng = random.Random(3)
    read = declined = 0
    for _ in range(300):
        spans = [_span(rng) for _ in range(rng.randrange(1, 5))]
        mixed = len({kind for _, kind in spans}) > 1
        scope = b"".join(length_delimited(2, span) for span, _ in spans)
        raw = length_delimited(1, length_delimited(2, scope))
        request = ExportTraceServiceRequest.FromString(raw)
        parsed = request.resource_spans[0].scope_spans[0].spans
        found = LiteRequest(raw, with_times).scope(0, 0, len(parsed))
        if found is None:
            declined += 1
            continue
        read += 1
        ids, starts, ends = found
        assert ids == [span.trace_id for span in parsed]
        if with_times:
            assert starts == [span.start_time_unix_nano for span in parsed]
            assert ends == [span.end_time_unix_nano for span in parsed]
        else:
            assert starts is None and ends is None
        assert not mixed or all(len(span.trace_id) == 16 for span in parsed)
    assert read > 50 and declined > 50, (read, declined)


def test_a_span_with_its_trace_id_written_twice_goes_with_the_last_as_protobuf_reads_it() -> None:
    first, last, other = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
    twice = length_delimited(1, first) + length_delimited(5, b"op") + length_delimited(1, last)
    scope = length_delimited(2, length_delimited(1, other)) + length_delimited(2, twice)
    raw = length_delimited(1, length_delimited(2, scope))
    for facts in (Facts(), Facts(read_times=True)):
        _, parts = split_body(raw, ExportTraceServiceRequest.FromString(raw), roots=False, facts=facts)
        assert {trace_id: count for trace_id, _, count, _ in parts} == {other: 1, last: 1}


def test_a_scope_the_lite_request_does_not_have_is_declined() -> None:
    raw = length_delimited(1, length_delimited(2, length_delimited(2, length_delimited(1, b"\x01" * 16))))
    assert LiteRequest(raw, False).scope(0, 0, 1) is not None
    assert LiteRequest(raw, False).scope(0, 1, 1) is None and LiteRequest(raw, False).scope(1, 0, 1) is None
    assert LiteRequest(raw, False).scope(0, 0, 2) is None  # not as many spans as the walk found


@pytest.mark.parametrize("count", [31, 32, 33, 100])
@pytest.mark.parametrize("with_times", [False, True])
def test_scopes_of_many_canonical_spans_are_read_whole(count: int, with_times: bool) -> None:
    rng = random.Random(count)
    scope = b"".join(length_delimited(2, length_delimited(1, rng.randbytes(16)) + length_delimited(5, b"op")
                                      + b"\x39" + rng.randbytes(8) + b"\x41" + rng.randbytes(8)) for _ in range(count))
    raw = length_delimited(1, length_delimited(2, scope))
    parsed = ExportTraceServiceRequest.FromString(raw).resource_spans[0].scope_spans[0].spans
    found = LiteRequest(raw, with_times).scope(0, 0, count)
    assert found is not None and found[0] == [span.trace_id for span in parsed]
    assert found[1] == ([span.start_time_unix_nano for span in parsed] if with_times else None)
    assert found[2] == ([span.end_time_unix_nano for span in parsed] if with_times else None)
