"""OTLP/JSON with hex ids, and decompression with a hard limit on the decompressed size."""

from __future__ import annotations

import gc
import gzip
import json
import tracemalloc
import zlib

import cramjam
import pytest
import zstandard
from google.protobuf import unknown_fields
from google.protobuf.message import Message
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import ScopeMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans

from edgeagent.errors import BadRequestError
from edgeagent.receivers import codec
from edgeagent.signals import Payload, Signal
from otel.otlpjson import to_otlp_json
from otel.wire import length_delimited

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"
PARENT = "eee19b7ec3c1b173"


def test_otlp_json_hex_ids_become_the_right_bytes_in_spans_links_and_logs():
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": TRACE, "spanId": SPAN, "parentSpanId": PARENT, "name": "x", "kind": "SPAN_KIND_SERVER",
        "links": [{"traceId": TRACE, "spanId": PARENT}]}, {"traceId": TRACE, "spanId": SPAN, "kind": 3}]}]}]}
    payload = codec.decode(Signal.TRACES, json.dumps(document).encode(), codec.JSON)
    spans = payload.view().resource_spans[0].scope_spans[0].spans
    assert spans[0].trace_id == bytes.fromhex(TRACE)
    assert spans[0].span_id == bytes.fromhex(SPAN)
    assert spans[0].parent_span_id == bytes.fromhex(PARENT)
    assert spans[0].links[0].span_id == bytes.fromhex(PARENT)
    assert spans[0].kind == 2 and spans[1].kind == 3  # enum by name and by number
    assert payload.items == 2

    logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": TRACE, "spanId": SPAN,
                                                              "body": {"stringValue": "hi"}}]}]}]}
    record = codec.decode(Signal.LOGS, json.dumps(logs).encode(), codec.JSON).view() \
        .resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id == bytes.fromhex(TRACE) and record.span_id == bytes.fromhex(SPAN)



def test_snake_case_hex_ids_become_the_right_bytes_too():
    document = {"resource_spans": [{"scope_spans": [{"spans": [{
        "trace_id": TRACE, "span_id": SPAN, "parent_span_id": PARENT, "links": [{"trace_id": TRACE}]}]}]}]}
    span = codec.decode(Signal.TRACES, json.dumps(document).encode(), codec.JSON).view() \
        .resource_spans[0].scope_spans[0].spans[0]
    assert (span.trace_id, span.span_id, span.parent_span_id, span.links[0].trace_id) == (
        bytes.fromhex(TRACE), bytes.fromhex(SPAN), bytes.fromhex(PARENT), bytes.fromhex(TRACE))

def test_json_round_trips_with_hex_ids():
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TRACE, "spanId": SPAN, "name": "x"}]}]}]}
    payload = codec.decode(Signal.TRACES, json.dumps(document).encode(), codec.JSON)
    span = to_otlp_json(payload.view())["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == TRACE and span["spanId"] == SPAN


@pytest.mark.parametrize("ids,message", [
    ({"traceId": "W47/95gDgQPSabYzgT/GDA==", "spanId": SPAN}, "hex"),
    ({"traceId": TRACE[:-2], "spanId": SPAN}, "16 bytes"),
    ({"traceId": TRACE, "spanId": SPAN + "00"}, "8 bytes"),
])
def test_bad_ids_are_rejected_with_a_clear_message(ids, message):
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{**ids, "name": "x"}]}]}]}
    with pytest.raises(BadRequestError) as error:
        codec.decode(Signal.TRACES, json.dumps(document).encode(), codec.JSON)
    assert error.value.status == 400 and message in str(error.value)


@pytest.mark.parametrize("body", [
    b'{"resourceSpans": 1' + b"1" * 4998 + b"}",  # past Python's 4300-digit limit for ints in text
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": ' + b"9" * 5000 + b"}]}]}]}",
])
def test_json_with_an_integer_too_long_to_read_gets_400(body):
    with pytest.raises(BadRequestError) as error:
        codec.decode(Signal.TRACES, body, codec.JSON)
    assert error.value.status == 400 and "JSON" in str(error.value)



def _fill(template: str, *values: str) -> str:
    """JSON text with a repeated key, which no dict can hold: each @ is the next value."""
    for value in values:
        template = template.replace("@", value, 1)
    return template


def _span_names(body: str) -> list[str]:
    request = codec.decode(Signal.TRACES, body.encode(), codec.JSON).view()
    return [span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def test_a_repeated_list_key_appends_like_pdata_instead_of_dropping_the_first():
    a = json.dumps({"traceId": TRACE, "spanId": SPAN, "name": "A"})
    b = json.dumps({"traceId": TRACE, "spanId": PARENT, "name": "B"})
    for template in ('{"resourceSpans":[{"scopeSpans":[{"spans":[@]}]}],'
                     '"resourceSpans":[{"scopeSpans":[{"spans":[@]}]}]}',
                     '{"resourceSpans":[{"scopeSpans":[{"spans":[@],"spans":[@]}]}]}',
                     '{"resourceSpans":[{"scope_spans":[{"spans":[@]}],"scopeSpans":[{"spans":[@]}]}]}',
                     '{"resource_spans":[{"scopeSpans":[{"spans":[@]}]}],'
                     '"resourceSpans":[{"scopeSpans":[{"spans":[@]}]}]}'):
        assert _span_names(_fill(template, a, b)) == ["A", "B"], template


def test_a_repeated_singular_key_keeps_the_last_and_a_repeated_message_merges_like_pdata():
    body = _fill('{"resourceSpans":[{"resource":{"attributes":[{"key":"a","value":{"stringValue":"1"}}],'
                 '"droppedAttributesCount":1},"resource":{"attributes":[{"key":"b","value":{"stringValue":"2"}}],'
                 '"dropped_attributes_count":2},"scopeSpans":[{"spans":[{"traceId":"@","spanId":"@","name":"x",'
                 '"name":"y","trace_id":"@"}]}]}]}', TRACE, SPAN, PARENT + PARENT)
    resource_spans = codec.decode(Signal.TRACES, body.encode(), codec.JSON).view().resource_spans[0]
    assert [kv.key for kv in resource_spans.resource.attributes] == ["a", "b"]
    assert resource_spans.resource.dropped_attributes_count == 2
    span = resource_spans.scope_spans[0].spans[0]
    assert span.name == "y" and span.trace_id == bytes.fromhex(PARENT + PARENT)


def test_a_metric_given_two_kinds_of_data_keeps_the_last_like_pdata():
    point = '{"asInt":"1","timeUnixNano":"1"}'
    body = _fill('{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","sum":{"dataPoints":[@]},'
                 '"sum":{"dataPoints":[@,@],"isMonotonic":true}}]}]}]}', point, point, point)
    metric = codec.decode(Signal.METRICS, body.encode(), codec.JSON).view() \
        .resource_metrics[0].scope_metrics[0].metrics[0]
    assert len(metric.sum.data_points) == 2 and metric.sum.is_monotonic  # replaced, not merged

def test_a_null_in_a_list_of_messages_is_an_empty_message_like_pdata_not_a_400_for_the_whole_batch():
    span = json.dumps({"traceId": TRACE, "spanId": SPAN, "name": "A"})
    body = _fill('{"resourceSpans":[null,{"scopeSpans":[null,{"spans":[null,@]}]}]}', span)
    resource_spans = codec.decode(Signal.TRACES, body.encode(), codec.JSON).view().resource_spans
    assert len(resource_spans) == 2 and not resource_spans[0].scope_spans
    assert [s.name for s in resource_spans[1].scope_spans[1].spans] == ["", "A"]
    value = codec.decode(Signal.LOGS, b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"arrayValue":'
                         b'{"values":[null,{"intValue":"1"}]}}}]}]}]}', codec.JSON).view() \
        .resource_logs[0].scope_logs[0].log_records[0].body
    assert [v.WhichOneof("value") for v in value.array_value.values] == [None, "int_value"]
    with pytest.raises(BadRequestError):  # a null number in a list is an error for pdata too
        codec.decode(Signal.METRICS, b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"histogram":{"dataPoints":'
                     b'[{"bucketCounts":[null]}]}}]}]}]}', codec.JSON)


@pytest.mark.parametrize("signal", list(Signal))
def test_a_json_null_body_is_an_empty_request_as_pdata_reads_it_not_a_400(signal):
    """pdata's iterator reads `null` where the request object belongs as no fields: otelcol
    answers 200, and a client sending it took our 400 as a permanent refusal."""
    assert codec.decode(signal, b" null ", codec.JSON).items == 0
    assert codec.decode(signal, b"", codec.PROTOBUF).items == 0  # an empty protobuf is an empty request there too
    for refused in (b"", b"[]", b'"x"', b"1"):  # pdata's ReadObject wants `{` or `null`: 400 as otelcol answers
        with pytest.raises(BadRequestError):
            codec.decode(signal, refused, codec.JSON)


@pytest.mark.parametrize(("signal", "body"), [
    (Signal.LOGS, b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":"hello"}]}]}]}'),
    (Signal.TRACES, b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":"x"}]}]}]}]}'),
    (Signal.TRACES, b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"status":[]}]}]}]}'),
    (Signal.TRACES, b'{"resourceSpans":[{"scopeSpans":[{"spans":["abc"]}]}]}'),
], ids=["log-body-as-text", "attribute-value-as-text", "status-as-list", "span-as-text"])
def test_a_string_or_list_where_a_message_belongs_gets_400_like_pdata_not_an_empty_message(signal, body):
    """json_format read the characters of "hello" as unknown field names: a log's body was stored
    empty and the client told it was accepted."""
    with pytest.raises(BadRequestError) as refused:
        codec.decode(signal, body, codec.JSON)
    assert "object" in str(refused.value)


def test_two_members_of_one_oneof_keep_the_last_like_pdata_not_a_400_for_the_whole_batch():
    spans = codec.decode(Signal.TRACES, b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"x","attributes":['
                         b'{"key":"a","value":{"stringValue":"s","intValue":"7"}},'
                         b'{"key":"b","value":{"intValue":"7","string_value":"s"}}]}]}]}]}', codec.JSON).view() \
        .resource_spans[0].scope_spans[0].spans
    assert [kv.value.WhichOneof("value") for kv in spans[0].attributes] == ["int_value", "string_value"]
    body = (b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"asDouble":1.5,'
            b'"asInt":"2"}]},"sum":{"dataPoints":[{"asInt":"3","asDouble":2.5}]}}]}]}]}')
    metric = codec.decode(Signal.METRICS, body, codec.JSON).view().resource_metrics[0].scope_metrics[0].metrics[0]
    assert metric.WhichOneof("data") == "sum" and metric.sum.data_points[0].as_double == 2.5


@pytest.mark.parametrize("after", [b"\x00", b"\n\n{}", b"\r\nxyz"], ids=["nul", "second-object", "garbage"])
def test_what_follows_the_json_object_is_ignored_as_pdata_ignores_it_not_a_400(after):
    """A C client that counts its string's NUL terminator in the body got 400 and dropped the data,
    where otelcol reads the object and stops."""
    span = json.dumps({"traceId": TRACE, "spanId": SPAN, "name": "A"})
    body = _fill('{"resourceSpans":[{"scopeSpans":[{"spans":[@]}]}]}', span).encode() + after
    assert _span_names(body.decode()) == ["A"]
    with pytest.raises(BadRequestError):  # what the object holds is still read strictly
        codec.decode(Signal.TRACES, b'{"resourceSpans":[x]}' + after, codec.JSON)


def test_invalid_utf_8_in_string_fields_is_replaced_and_the_request_kept_not_a_400():
    """pdata does not check UTF-8, so otelcol accepts what a C++ SDK or otelcol's own syslog or
    kafka receivers send with Latin-1 in it; the protobuf runtime here refuses it, and every such
    batch got 400 and was dropped by its sender. U+FFFD stands for each invalid sequence."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add(severity_text="INFO")
    record.body.array_value.values.add().string_value = "caf@"
    record.attributes.add(key="city").value.string_value = "Z@rich"
    raw = request.SerializeToString().replace(b"@", b"\xe9")
    payload = codec.decode(Signal.LOGS, raw, codec.PROTOBUF)
    got = payload.view().resource_logs[0].scope_logs[0].log_records[0]
    assert got.body.array_value.values[0].string_value == "caf\ufffd"
    assert (got.attributes[0].value.string_value, got.severity_text) == ("Z\ufffdrich", "INFO")
    assert payload.items == 1 and ExportLogsServiceRequest.FromString(payload.serialized()) == payload.view()

    document = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"Z\xfcrich"}}]}]}]}'
    got = codec.decode(Signal.LOGS, document, codec.JSON).view().resource_logs[0].scope_logs[0].log_records[0]
    assert got.body.string_value == "Z\ufffdrich"
    with pytest.raises(BadRequestError):  # a body that is no protobuf stays a 400
        codec.decode(Signal.LOGS, b"\x0a\x05\xff\xfe\xe9", codec.PROTOBUF)


def test_repairing_utf_8_in_a_deeply_nested_body_takes_memory_of_its_size_not_of_its_depth():
    """The walk copied each nested message's bytes before walking into it: a 2 MiB string at the
    bottom of 30 nested maps (93 messages deep) took 190 MiB to repair."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from edgeagent.receivers import utf8

    request = ExportLogsServiceRequest()
    value = request.resource_logs.add().scope_logs.add().log_records.add().body
    for _ in range(30):
        value = value.kvlist_value.values.add(key="k").value
    value.string_value = "@" * (2 << 20)
    raw = request.SerializeToString().replace(b"@", b"\xe9")
    gc.collect()
    tracemalloc.start()
    try:
        fixed = utf8.repaired(ExportLogsServiceRequest.DESCRIPTOR, raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fixed is not None and ExportLogsServiceRequest.FromString(fixed).ByteSize() > len(raw)
    assert peak < 16 * len(raw), f"{peak / len(raw):.0f} times the body"  # its repair is 3 times its size


DATA = b"otlp" * 10_000
ENCODINGS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "identity": lambda data: data,
    "": lambda data: data,
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_decompressor_round_trips_in_chunks(encoding):
    compressed = ENCODINGS[encoding](DATA)
    decompressor = codec.Decompressor(encoding, limit=len(DATA))
    for start in range(0, len(compressed), 1000):
        decompressor.feed(compressed[start:start + 1000])
    assert decompressor.finish() == DATA


def test_raw_deflate_is_accepted_too():
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = raw.compress(DATA) + raw.flush()
    decompressor = codec.Decompressor("deflate", limit=len(DATA))
    decompressor.feed(body)
    assert decompressor.finish() == DATA



@pytest.mark.parametrize("wbits", [-zlib.MAX_WBITS, zlib.MAX_WBITS], ids=["raw", "zlib"])
def test_deflate_is_read_the_same_however_the_body_is_cut(wbits):
    compressor = zlib.compressobj(wbits=wbits)
    body = compressor.compress(DATA) + compressor.flush()
    for chunk in (1, 2, 3, len(body)):  # a first chunk of one byte told too little to choose raw or zlib
        decompressor = codec.Decompressor("deflate", limit=len(DATA) * 2)
        for start in range(0, len(body), chunk):
            decompressor.feed(body[start:start + chunk])
        decompressor.feed(body[:1])  # and a second stream cut after its first byte is truncated
        with pytest.raises(BadRequestError) as truncated:
            decompressor.finish()
        assert truncated.value.status == 400
        decompressor = codec.Decompressor("deflate", limit=len(DATA) * 2)
        for start in range(0, len(body), chunk):
            decompressor.feed(body[start:start + chunk])
        assert decompressor.finish() == DATA, chunk

@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "identity"])
def test_the_limit_applies_to_the_decompressed_size(encoding):
    decompressor = codec.Decompressor(encoding, limit=len(DATA) - 1)
    with pytest.raises(BadRequestError) as error:
        decompressor.feed(ENCODINGS[encoding](DATA))
        decompressor.finish()
    assert error.value.status == 413


def test_truncated_gzip_and_unknown_encodings_are_a_400_like_otelcol():
    decompressor = codec.Decompressor("gzip", limit=len(DATA))
    decompressor.feed(gzip.compress(DATA)[:-10])
    with pytest.raises(BadRequestError) as truncated:
        decompressor.finish()
    assert truncated.value.status == 400
    for encoding in ("br", "gzip, zstd"):
        with pytest.raises(BadRequestError) as unknown:
            codec.Decompressor(encoding, limit=10)
        assert unknown.value.status == 400
        assert str(unknown.value).count("none") == 1  # each one the answer names, once


def test_repeated_metadata_keys_are_joined_like_otelcol():
    assert codec.metadata_of([("X-Tenant", "a"), ("x-tenant", "b"), ("bin", b"\x00")]) == {"x-tenant": "a;b"}


def _zstd_frames(*parts: bytes) -> bytes:
    return b"".join(zstandard.ZstdCompressor().compress(part) for part in parts)


def _snappy_block(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def _snappy_framed(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress(data))


def _lz4_frame(data: bytes) -> bytes:
    return bytes(cramjam.lz4.compress(data))


# every Content-Encoding otelcol's confighttp accepts, each with its compressor, whole bodies concatenated
CONCATENATED = {
    "gzip": lambda a, b: gzip.compress(a) + gzip.compress(b),
    "zstd": _zstd_frames,
    "zlib": lambda a, b: zlib.compress(a) + zlib.compress(b),
    "deflate": lambda a, b: zlib.compress(a) + zlib.compress(b),
    "snappy": lambda a, b: _snappy_framed(a) + _snappy_framed(b),
    "x-snappy-framed": lambda a, b: _snappy_framed(a) + _snappy_framed(b),
    "lz4": lambda a, b: _lz4_frame(a) + _lz4_frame(b),
}


def _decompress(encoding: str, body: bytes, limit: int, chunk: int = 1000) -> bytes:
    decompressor = codec.Decompressor(encoding, limit=limit)
    for start in range(0, len(body), chunk):
        decompressor.feed(body[start:start + chunk])
    return decompressor.finish()


@pytest.mark.parametrize("encoding", list(CONCATENATED))
def test_concatenated_members_and_frames_are_all_decoded_not_only_the_first(encoding):
    first, second = b"first" * 5000, b"second" * 5000
    body = CONCATENATED[encoding](first, second)
    assert _decompress(encoding, body, limit=len(first) + len(second)) == first + second


def test_snappy_block_format_is_accepted_as_otelcol_does_for_snappy():
    assert _decompress("snappy", _snappy_block(DATA), limit=len(DATA)) == DATA


@pytest.mark.parametrize("encoding", ["none", "identity", ""])
def test_uncompressed_spellings_pass_through(encoding):
    assert _decompress(encoding, DATA, limit=len(DATA)) == DATA


def _zeros(size: int) -> bytes:
    return b"\x00" * size


# bodies of a few hundred KiB at most that expand far beyond the limit; zstd without a declared content size
BOMBS = {
    "gzip": lambda: gzip.compress(_zeros(64 << 20)) * 4,
    "zlib": lambda: zlib.compress(_zeros(64 << 20), 9),
    "zstd": lambda: zstandard.ZstdCompressor(write_content_size=False).compress(_zeros(64 << 20)) * 16,
    "snappy": lambda: _snappy_framed(_zeros(16 << 20)),
    "x-snappy-framed": lambda: _snappy_framed(_zeros(16 << 20)),
    "lz4": lambda: _lz4_frame(_zeros(64 << 20)),
}


@pytest.mark.parametrize("encoding", list(BOMBS))
def test_a_bomb_stops_at_the_limit_counted_on_output_with_413(encoding):
    bomb = BOMBS[encoding]()
    assert len(bomb) < 4 << 20
    with pytest.raises(BadRequestError) as error:
        _decompress(encoding, bomb, limit=1 << 20, chunk=64 * 1024)
    assert error.value.status == 413


def test_a_snappy_block_declaring_more_than_the_limit_gets_413_before_decoding():
    with pytest.raises(BadRequestError) as error:
        _decompress("snappy", _snappy_block(_zeros(2 << 20)), limit=1 << 20)
    assert error.value.status == 413


@pytest.mark.parametrize("encoding", list(CONCATENATED))
def test_truncated_and_garbage_bodies_get_400(encoding):
    body = CONCATENATED[encoding](DATA, DATA)
    for broken in (body[:-3], body[:len(body) // 2 + 5], body + b"\x01garbage", b"\x00garbage" + body):
        with pytest.raises(BadRequestError) as error:
            _decompress(encoding, broken, limit=4 * len(DATA))
        assert error.value.status == 400, (encoding, broken[:12])


@pytest.mark.parametrize("encoding", list(BOMBS))
def test_a_refused_bomb_frees_its_output_at_once_not_when_the_cycle_collector_runs(encoding):
    bomb = BOMBS[encoding]()
    gc.disable()
    tracemalloc.start()
    try:
        for _ in range(3):
            with pytest.raises(BadRequestError):
                _decompress(encoding, bomb, limit=8 << 20, chunk=64 * 1024)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert held < 2 << 20, f"{held / 2**20:.1f} MiB still held after three refused bombs"


class _Refused(Exception):
    pass


# lz4 is left out: a frame is decoded whole, once the most its blocks can yield fits the room left
@pytest.mark.parametrize("encoding", [encoding for encoding in BOMBS if encoding != "lz4"])
def test_the_reservation_grows_with_each_piece_of_output_and_a_refusal_stops_decoding_at_once(encoding):
    seen: list[int] = []

    def reserve(produced: int) -> None:
        seen.append(produced)
        if produced > 1 << 20:
            raise _Refused()

    decompressor = codec.Decompressor(encoding, limit=64 << 20, on_output=reserve)
    with pytest.raises(_Refused):
        decompressor.feed(BOMBS[encoding]())  # one chunk that expands to far more than 1 MiB
    assert seen == sorted(seen) and seen[-1] <= (1 << 20) + 128 * 1024


def test_zstd_frames_with_checksums_and_skippable_frames_are_decoded_whole():
    checked = zstandard.ZstdCompressor(write_checksum=True, write_content_size=False)
    skippable = b"\x50\x2a\x4d\x18" + (3).to_bytes(4, "little") + b"pad"
    body = checked.compress(b"first" * 1000) + skippable + checked.compress(b"second" * 1000)
    assert _decompress("zstd", body, limit=20_000, chunk=7) == b"first" * 1000 + b"second" * 1000
    with pytest.raises(BadRequestError) as cut:
        _decompress("zstd", body[:-2], limit=20_000)
    assert cut.value.status == 400


def test_a_lone_surrogate_escape_is_replaced_and_the_request_kept_not_a_400():
    """JavaScript SDKs that cut a long string between the halves of a surrogate pair send
    `"\\ud83d"`, which JSON.stringify escapes; pdata reads it as U+FFFD and otelcol keeps the batch,
    where the protobuf JSON parser refused the whole request ("Unpaired surrogate")."""
    span = json.dumps({"traceId": TRACE, "spanId": SPAN, "name": "cut \ud83d",
                       "attributes": [{"key": "k\udc00", "value": {"stringValue": "pair \ud83d\ude00 ok"}}]})
    document = _fill('{"resourceSpans":[{"scopeSpans":[{"spans":[@]}]}]}', span)
    assert "\\ud83d" in document  # escaped as JSON.stringify escapes it
    got = codec.decode(Signal.TRACES, document.encode(), codec.JSON).view().resource_spans[0].scope_spans[0].spans[0]
    assert got.name == "cut \ufffd"
    assert (got.attributes[0].key, got.attributes[0].value.string_value) == ("k\ufffd", "pair \U0001f600 ok")


@pytest.mark.parametrize("value", ["!!!!", "aGVs bG8=", "aGVsbG8=?", "a"])
def test_a_bytes_value_that_is_not_base64_gets_400_not_an_ok_for_other_bytes(value):
    """The protobuf JSON parser skips what is no base64 character, so `"!!!!"` was kept as empty
    bytes and `"aGVs bG8="` as "hello" under an OK; pdata refuses both (400), as it must: the
    value the client sent is not what would have been kept."""
    span = json.dumps({"traceId": TRACE, "spanId": SPAN, "name": "A",
                       "attributes": [{"key": "b", "value": {"bytesValue": value}}]})
    with pytest.raises(BadRequestError, match="base64"):
        codec.decode(Signal.TRACES, _fill('{"resourceSpans":[{"scopeSpans":[{"spans":[@]}]}]}', span).encode(),
                     codec.JSON)


@pytest.mark.parametrize("value, expected", [("aGVsbG8=", b"hello"), ("aGVsbG8", b"hello"), ("", b""),
                                             ("_-8=", b"\xff\xef"), ("/+8=", b"\xff\xef"), ("aGVs\r\nbG8=", b"hello")])
def test_base64_bytes_values_are_kept_exactly(value, expected):
    span = json.dumps({"traceId": TRACE, "spanId": SPAN, "name": "A",
                       "attributes": [{"key": "b", "value": {"bytesValue": value}}]})
    got = codec.decode(Signal.TRACES, _fill('{"resourceSpans":[{"scopeSpans":[{"spans":[@]}]}]}', span).encode(),
                       codec.JSON).view().resource_spans[0].scope_spans[0].spans[0]
    assert got.attributes[0].value.bytes_value == expected



def _deprecated_form(scopes: bytes, current: bytes = b"") -> bytes:
    """A request whose one resource holds `scopes` (a serialized Scope* message) in field 1000, OTLP's
    instrumentation_library_{spans,metrics,logs} before 0.15, and `current` in its scope field (2)."""
    resource = length_delimited(1, length_delimited(1, length_delimited(1, b"service.name")))  # attributes
    return length_delimited(1, resource + length_delimited(1000, scopes) + current)


def _scopes(signal: Signal, count: int) -> bytes:
    if signal is Signal.TRACES:
        return ScopeSpans(spans=[{"name": f"s{i}", "trace_id": b"t" * 16, "span_id": b"s" * 8}
                                 for i in range(count)]).SerializeToString()
    if signal is Signal.METRICS:
        return ScopeMetrics(metrics=[{"name": f"m{i}", "gauge": {"data_points": [{"as_int": i}]}}
                                     for i in range(count)]).SerializeToString()
    return ScopeLogs(log_records=[{"severity_text": f"l{i}"} for i in range(count)]).SerializeToString()


def _resource(payload: Payload) -> Message:
    request = payload.view()
    return getattr(request, request.DESCRIPTOR.fields_by_number[1].name)[0]


@pytest.mark.parametrize("signal", list(Signal))
def test_scopes_in_the_deprecated_instrumentation_library_field_are_kept_as_pdata_keeps_them(signal):
    """SDKs from before OTLP 0.15 send a resource's spans, metrics and logs in field 1000, which
    pdata moves to the scope field and otelcol keeps. Here it was an unknown field: the request
    counted no item and was answered OK with nothing queued."""
    payload = codec.decode(signal, _deprecated_form(_scopes(signal, 3)), codec.PROTOBUF)
    assert payload.items == 3
    resource = _resource(payload)
    assert resource.resource.attributes[0].key == "service.name"
    assert getattr(resource, resource.DESCRIPTOR.fields_by_number[2].name)[0].SerializeToString() == _scopes(signal, 3)
    assert len(unknown_fields.UnknownFieldSet(resource)) == 0  # upstreams get the current field only


@pytest.mark.parametrize("signal", list(Signal))
def test_the_deprecated_field_beside_the_current_one_adds_nothing_as_pdata_drops_it(signal):
    body = _deprecated_form(_scopes(signal, 5), length_delimited(2, _scopes(signal, 2)))
    assert codec.decode(signal, body, codec.PROTOBUF).items == 2
    old_only = _deprecated_form(_scopes(signal, 5)) + length_delimited(1, length_delimited(2, b""))
    assert codec.decode(signal, old_only, codec.PROTOBUF).items == 5  # an empty scope elsewhere changes nothing


def test_a_flood_of_resources_without_items_is_not_walked_for_ever_for_the_deprecated_field():
    """Looking for field 1000 walks the request a field at a time, in Python: a body of a million
    empty resources and that field's bytes would cost seconds; past MAX_FIELDS it is a 400."""
    body = b"\x0a\x00" * 1_000_000 + length_delimited(1, length_delimited(1000, _scopes(Signal.LOGS, 1)))
    with pytest.raises(BadRequestError, match="resources"):
        codec.decode(Signal.LOGS, body, codec.PROTOBUF)
    ordinary = _deprecated_form(_scopes(Signal.LOGS, 2)) * 100  # a hundred old resources: kept
    assert codec.decode(Signal.LOGS, ordinary, codec.PROTOBUF).items == 200


@pytest.mark.parametrize("signal", list(Signal))
@pytest.mark.parametrize("content_type", [codec.PROTOBUF, codec.JSON])
def test_the_written_out_success_answer_is_the_encoded_response_with_an_empty_partial_success(signal, content_type):
    response = signal.response_class()
    response.partial_success.SetInParent()
    assert codec.success_response(content_type) == codec.encode_response(response, content_type)
    assert signal.response_class.FromString(codec.success_response(codec.PROTOBUF)) == response
