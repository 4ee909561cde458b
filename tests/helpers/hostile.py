"""Hostile request bodies for fuzzing the receivers: every encoding otelcol sends, valid OTLP
requests, garbage, and what goes wrong on the way (truncation, concatenation, flipped bytes)."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib

import cramjam
import zstandard
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "zlib": zlib.compress,
    "deflate": _raw_deflate,
    "snappy": lambda data: bytes(cramjam.snappy.compress_raw(data)),
    "x-snappy-framed": lambda data: bytes(cramjam.snappy.compress(data)),
    "lz4": lambda data: bytes(cramjam.lz4.compress(data)),
    "none": lambda data: data,
}


def _id(size: int, index: int) -> bytes:
    return hashlib.blake2b(index.to_bytes(4, "big"), digest_size=size).digest()  # the same on every run


def spans_request(count: int, name: str = "op") -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(count):
        scope.spans.add(trace_id=_id(16, index), span_id=_id(8, index), name=f"{name}-{index}", kind=index % 6)
    return request.SerializeToString()


def spans_json(count: int) -> bytes:
    spans = [{"traceId": _id(16, index).hex(), "spanId": _id(8, index).hex(), "name": f"op-{index}", "kind": 2}
             for index in range(count)]
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "name", "kind",
                         "attributes", "key", "value", "stringValue", "intValue", "kvlistValue", "values",
                         "arrayValue", "x"]), children, max_size=4),
    max_leaves=30)

plain_parts = st.one_of(
    st.binary(max_size=400),
    st.integers(0, 40).map(spans_request),
    st.integers(0, 20).map(spans_json),
    _json_values.map(lambda value: json.dumps(value).encode()),
    st.just(b"[" * 5000 + b"]" * 5000),
)


@st.composite
def bodies(draw) -> tuple[str, bytes]:
    """(Content-Encoding, body): parts compressed one by one and joined, then maybe damaged."""
    encoding = draw(st.sampled_from(list(ENCODERS)))
    parts = draw(st.lists(plain_parts, min_size=1, max_size=3))
    body = b"".join(ENCODERS[encoding](part) for part in parts)
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "append", "prepend"]))
    if damage == "truncate" and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif damage == "flip" and body:
        index = draw(st.integers(0, len(body) - 1))
        body = body[:index] + bytes([body[index] ^ draw(st.integers(1, 255))]) + body[index + 1:]
    elif damage == "append":
        body += draw(st.binary(min_size=1, max_size=20))
    elif damage == "prepend":
        body = draw(st.binary(min_size=1, max_size=20)) + body
    return encoding, body
