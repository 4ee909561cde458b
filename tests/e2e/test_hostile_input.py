"""Hostile and unusual bodies against the real agent: an OK means every byte sent was kept, any
refusal is a 4xx, and no body makes the agent's memory grow past its limits."""

from __future__ import annotations

import gzip
import http.client
import os
import zlib

import cramjam
import grpc
import pytest
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.test_bad_input import TRACE_METHOD, agent
from tests.helpers import grpc_raw

__all__ = ["agent"]  # the module's own agent, started as test_bad_input's is


def spans(count: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(count):
        scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name=f"op-{index}")
    return request.SerializeToString()


def post(port: int, body: bytes, encoding: str | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/x-protobuf"}
    if encoding:
        headers["Content-Encoding"] = encoding
    try:
        connection.request("POST", "/v1/traces", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def accepted(agent) -> float:
    return agent.metric("otelcol_receiver_accepted_spans")


# protobuf messages concatenate into one merged message: two compressed parts hold both span lists
TWO_PARTS = {
    "gzip": lambda a, b: gzip.compress(a) + gzip.compress(b),
    "zstd": lambda a, b: zstandard.ZstdCompressor().compress(a) + zstandard.ZstdCompressor().compress(b),
    "zlib": lambda a, b: zlib.compress(a) + zlib.compress(b),
    "deflate": lambda a, b: zlib.compress(a) + zlib.compress(b),
    "snappy": lambda a, b: bytes(cramjam.snappy.compress_raw(a + b)),
    "x-snappy-framed": lambda a, b: bytes(cramjam.snappy.compress(a)) + bytes(cramjam.snappy.compress(b)),
    "lz4": lambda a, b: bytes(cramjam.lz4.compress(a)) + bytes(cramjam.lz4.compress(b)),
    "none": lambda a, b: a + b,
}


@pytest.mark.parametrize("encoding", list(TWO_PARTS))
def test_an_ok_keeps_every_member_and_frame_of_the_body(agent, encoding):
    before = accepted(agent)
    assert post(agent.http_port, TWO_PARTS[encoding](spans(3), spans(4)), encoding) == 200
    assert accepted(agent) == before + 7


def _zstd_bomb_without_content_size(gib: int) -> bytes:
    """GiBs of zeros in one zstd frame that declares no content size (streamed: nothing large in memory)."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(1 << 20)
    body = b"".join(compressor.compress(zeros) for _ in range(gib << 10)) + compressor.flush()
    return body


def _peak_anonymous_memory(pid: int) -> int:
    """The agent's peak resident memory (VmHWM), in bytes: a bomb expanded in memory shows here."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_zstd_bomb_without_content_size_gets_413_without_expanding(agent):
    bomb = _zstd_bomb_without_content_size(2)
    assert len(bomb) < 200_000
    assert post(agent.http_port, bomb, "zstd") == 413
    assert _peak_anonymous_memory(agent.process.pid) < 400 << 20
    assert post(agent.http_port, spans(1)) == 200


@pytest.mark.parametrize("encoding,bomb", [
    ("lz4", lambda: bytes(cramjam.lz4.compress(bytes(64 << 20)))),
    ("x-snappy-framed", lambda: bytes(cramjam.snappy.compress(bytes(32 << 20)))),
    ("snappy", lambda: bytes(cramjam.snappy.compress_raw(bytes(32 << 20)))),
])
def test_lz4_and_snappy_bombs_get_413(agent, encoding, bomb):
    assert post(agent.http_port, bomb(), encoding) == 413


def test_an_unknown_encoding_gets_400_like_otelcol(agent):
    assert post(agent.http_port, spans(1), "br") == 400


def test_a_grpc_gzip_bomb_gets_resource_exhausted(agent):
    with grpc.insecure_channel(f"127.0.0.1:{agent.grpc_port}") as channel:
        export = channel.unary_unary(TRACE_METHOD)
        with pytest.raises(grpc.RpcError) as bomb:
            export(bytes(8 << 20), timeout=10, compression=grpc.Compression.Gzip)
        assert bomb.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


DEEP_JSON = {
    "arrays": lambda: '{"resourceSpans":' + "[" * 200_000 + "]" * 200_000 + "}",
    "attribute values": lambda: ('{"resourceSpans":[{"resource":{"attributes":[{"key":"deep","value":'
                                 + '{"kvlistValue":{"values":[{"key":"k","value":' * 900 + "{}" + "}]}}" * 900
                                 + "}]}}]}"),
}


@pytest.mark.parametrize("shape", list(DEEP_JSON))
def test_json_nested_too_deep_gets_400_not_500(agent, shape):
    document = DEEP_JSON[shape]().encode()
    connection = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=30)
    try:
        connection.request("POST", "/v1/traces", body=document, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 400


def test_protobuf_nested_too_deep_gets_400_not_500(agent):
    value = b""
    for _ in range(5000):  # AnyValue{kvlist_value{values[KeyValue{key, value}]}} all the way down
        key_value = b"\x0a\x01k" + b"\x12" + _varint(len(value)) + value
        kvlist = b"\x0a" + _varint(len(key_value)) + key_value
        value = b"\x32" + _varint(len(kvlist)) + kvlist
    attribute = b"\x0a\x01d\x12" + _varint(len(value)) + value
    resource = b"\x0a" + _varint(len(attribute)) + attribute
    resource_spans = b"\x0a" + _varint(len(resource)) + resource
    body = b"\x0a" + _varint(len(resource_spans)) + resource_spans
    assert post(agent.http_port, body) == 400


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_grpc_keeps_every_gzip_member_of_a_message(agent):
    before = accepted(agent)
    message = gzip.compress(spans(3)) + gzip.compress(spans(4))
    assert grpc_raw.call(agent.grpc_port, message, "gzip")[0] == grpc.StatusCode.OK.value[0]
    assert accepted(agent) == before + 7


@pytest.mark.parametrize(("encoding", "compress"), [
    ("zstd", lambda data: zstandard.ZstdCompressor().compress(data)),
    ("snappy", lambda data: bytes(cramjam.snappy.compress(data))),  # framed, as otelcol sends it
    ("snappy", lambda data: bytes(cramjam.snappy.compress_raw(data))),
])
def test_grpc_zstd_and_snappy_messages_are_accepted_not_refused_as_internal(agent, encoding, compress):
    before = accepted(agent)
    assert grpc_raw.call(agent.grpc_port, compress(spans(5)), encoding) == (grpc.StatusCode.OK.value[0], "")
    assert accepted(agent) == before + 5


def test_a_refused_grpc_call_is_timed_with_its_status_not_as_ok(agent):
    def timed(status: str) -> float:
        return agent.metric("rpc_server_call_duration_count", rpc_response_status_code=status,
                            rpc_method="opentelemetry.proto.collector.trace.v1.TraceService/Export")

    refused, ok = timed("INVALID_ARGUMENT"), timed("OK")
    assert grpc_raw.call(agent.grpc_port, b"\xff\xff\xff")[0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert grpc_raw.call(agent.grpc_port, spans(1))[0] == grpc.StatusCode.OK.value[0]
    assert (timed("INVALID_ARGUMENT"), timed("OK")) == (refused + 1, ok + 1)


def test_a_grpc_zstd_bomb_gets_resource_exhausted(agent):
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * (64 << 20))
    assert grpc_raw.call(agent.grpc_port, bomb, "zstd")[0] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_grpc_truncated_compressed_messages_get_invalid_argument(agent, encoding):
    compress = gzip.compress if encoding == "gzip" else zlib.compress
    status, _ = grpc_raw.call(agent.grpc_port, compress(spans(50))[:-6], encoding)
    assert status == grpc.StatusCode.INVALID_ARGUMENT.value[0]


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip,
                                         grpc.Compression.Deflate])
def test_grpcio_clients_compressing_as_they_do_are_served(agent, compression):
    before = accepted(agent)
    with grpc.insecure_channel(f"127.0.0.1:{agent.grpc_port}") as channel:
        channel.unary_unary(TRACE_METHOD)(spans(5), timeout=10, compression=compression)
    assert accepted(agent) == before + 5
