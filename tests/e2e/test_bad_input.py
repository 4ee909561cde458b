"""Bad input gets a clear error, the agent keeps serving, and nothing accepted before is lost."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time
import zlib

import grpc
import pytest
import zstandard
from google.rpc import status_pb2

from tests.helpers import grpc_raw
from tests.helpers.net import free_port
from tests.helpers.sdk import send_spans

LIMIT = 1 << 20
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    from tests.helpers.agent import AgentProcess

    state = tmp_path_factory.mktemp("state")
    process = AgentProcess(args=["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"],
                           log_path=str(state / "agent.log"))
    process.args += process.ports_overrides()
    process.args += ["--set", f"receivers::otlp::protocols::http::max_request_body_size={LIMIT}",
                     "--set", "receivers::otlp::protocols::grpc::max_recv_msg_size_mib=1",
                     "--set", "service::telemetry::metrics::level=detailed"]  # the call durations
    process.start()
    yield process
    process.kill()


def post(port: int, body: bytes, content_type: str = "application/x-protobuf", encoding: str | None = None,
         path: str = "/v1/traces") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_garbage_protobuf_gets_400_with_a_status_body(agent):
    status, _, body = post(agent.http_port, b"\xff\xff\xff\xff garbage")
    assert status == 400
    assert "protobuf" in status_pb2.Status.FromString(body).message


def test_bad_json_gets_400_with_a_json_status(agent):
    status, headers, body = post(agent.http_port, b'{"resourceSpans": [', content_type="application/json")
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert "JSON" in json.loads(body)["message"]


def test_json_with_base64_ids_instead_of_hex_gets_400(agent):
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "W47/95gDgQPSabYzgT/GDA==",
                                                               "spanId": "7uGbfsPBsXQ=", "name": "x"}]}]}]}
    status, _, body = post(agent.http_port, json.dumps(document).encode(), content_type="application/json")
    assert status == 400
    assert "hex" in json.loads(body)["message"]



@pytest.mark.parametrize("path,document,field,value", [
    ("/v1/traces", {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x", "kind": "SERVER"}]}]}]},
     "kind", "SERVER"),
    ("/v1/metrics", {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "sum": {
        "aggregationTemporality": "CUMULATIVE", "dataPoints": [{"asInt": "5"}]}}]}]}]},
     "aggregationTemporality", "CUMULATIVE"),
    ("/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": "2"}]}]}]},
     "severityNumber", "2"),  # a number in a string is no enum name for pdata either
])
def test_an_unknown_enum_name_gets_400_naming_the_field_and_value_not_a_silent_zero(agent, path, document,
                                                                                    field, value):
    status, _, body = post(agent.http_port, json.dumps(document).encode(), content_type="application/json",
                           path=path)
    assert status == 400
    message = json.loads(body)["message"]
    assert field in message and repr(value) in message


def test_unknown_enum_numbers_and_unknown_keys_are_accepted_like_pdata(agent):
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x", "kind": 42, "status": {"code": 7},
                                                              "someFutureField": {"kind": "WHATEVER"}}]}]}]}
    status, _, _ = post(agent.http_port, json.dumps(document).encode(), content_type="application/json")
    assert status == 200

def test_wrong_content_type_gets_415(agent):
    status, _, body = post(agent.http_port, b"hello", content_type="text/plain")
    assert status == 415
    assert b"application/x-protobuf" in body


@pytest.mark.parametrize("encoding", ["br", "gzip, zstd"])
def test_unknown_or_several_content_encodings_get_400_with_a_status_body_like_otelcol(agent, encoding):
    status, headers, body = post(agent.http_port, b"abc", encoding=encoding)  # confighttp's newBodyReader
    assert status == 400 and headers["Content-Type"] == "application/x-protobuf"
    assert encoding in status_pb2.Status.FromString(body).message
    status, headers, body = post(agent.http_port, b"abc", content_type="application/json", encoding=encoding)
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["code"] == 3


def test_oversized_body_gets_413(agent):
    status, _, _ = post(agent.http_port, b"\x00" * (LIMIT + 1))
    assert status == 413


@pytest.mark.parametrize("encoding,compress", [
    ("gzip", lambda data: gzip.compress(data, 9)),
    ("zstd", lambda data: zstandard.ZstdCompressor(level=19).compress(data)),
])
def test_decompression_bomb_stops_at_the_limit_with_413(agent, encoding, compress):
    bomb = compress(b"\x00" * (256 << 20))  # 256 MiB of zeros in a few hundred KiB
    assert len(bomb) < LIMIT
    status, _, _ = post(agent.http_port, bomb, encoding=encoding)
    assert status == 413


def test_truncated_gzip_gets_400(agent):
    status, _, _ = post(agent.http_port, gzip.compress(b"\x0a\x00" * 1000)[:-12], encoding="gzip")
    assert status == 400



def test_raw_deflate_sent_in_one_byte_chunks_is_accepted_as_when_sent_whole(agent):
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = compressor.compress(b"\x0a\x00" * 1000) + compressor.flush()
    connection = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=30)
    try:
        connection.request("POST", "/v1/traces", body=iter([body[i:i + 1] for i in range(len(body))]),
                           headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "deflate"},
                           encode_chunked=True)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"\n\x00")  # partial_success, empty
    finally:
        connection.close()
    assert post(agent.http_port, body, encoding="deflate")[0] == 200


@pytest.mark.parametrize("encoding,status", [
    ("gzip", 400), ("zlib", 400), ("deflate", 400),  # gzip.NewReader and zlib.NewReader read a header: EOF
    ("snappy", 400),  # snappy.Decode: corrupt input
    ("zstd", 200), ("x-snappy-framed", 200), ("lz4", 200),  # their readers end cleanly with no frame at all
])
def test_an_empty_body_with_a_content_encoding_is_answered_as_otelcol_answers_it(agent, encoding, status):
    answer, headers, body = post(agent.http_port, b"", encoding=encoding)
    assert answer == status
    if status == 400:
        assert encoding in status_pb2.Status.FromString(body).message

def test_grpc_garbage_gets_invalid_argument_and_oversized_gets_resource_exhausted(agent):
    with grpc.insecure_channel(f"127.0.0.1:{agent.grpc_port}") as channel:
        export = channel.unary_unary(TRACE_METHOD)
        with pytest.raises(grpc.RpcError) as garbage:
            export(b"\xff\xff\xff\xff garbage", timeout=10)
        assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as oversized:
            export(b"\x0a\x00" * (LIMIT), timeout=10)
        assert oversized.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_success_is_answered_with_an_empty_partial_success_as_otelcol_answers_it(agent):
    """otelcol answers every OK with the response's partial_success present and empty (protobuf
    `0a 00`, JSON `{"partialSuccess":{}}`) on HTTP and gRPC; an empty body told a client that
    checks for the field that the answer was not otelcol's."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    spans = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a"}]}]}]}'
    status, headers, body = post(agent.http_port, spans, content_type="application/json")
    assert (status, headers["Content-Type"], json.loads(body)) == (200, "application/json", {"partialSuccess": {}})
    status, headers, body = post(agent.http_port, b"")
    assert (status, headers["Content-Type"]) == (200, "application/x-protobuf")
    assert ExportTraceServiceResponse.FromString(body).HasField("partial_success")
    with grpc.insecure_channel(f"127.0.0.1:{agent.grpc_port}") as channel:
        answer = channel.unary_unary(TRACE_METHOD)(b"", timeout=10)
    assert ExportTraceServiceResponse.FromString(answer).HasField("partial_success")


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_cut_short_by_a_half_close_gets_a_400_with_a_status_as_otelcol_answers_it(agent, framing):
    """A client that stops writing (FIN) before its body's end still reads the answer: otelcol
    gives it a 400 with a Status saying why; it got a bare 400 with no body to tell it."""
    head = "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    head += "Content-Length: 100\r\n\r\n" if framing == "length" else "Transfer-Encoding: chunked\r\n\r\n64\r\n"
    with socket.create_connection(("127.0.0.1", agent.http_port), timeout=10) as client:
        client.sendall(head.encode() + b"\x0a\x00" * 5)
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/x-protobuf" in headers.lower()
    assert status_pb2.Status.FromString(body).code == 3  # INVALID_ARGUMENT


def test_spans_an_old_sdk_sends_in_the_deprecated_field_are_kept_not_answered_ok_and_dropped(agent):
    """SDKs from before OTLP 0.15 put a resource's spans in instrumentation_library_spans (field
    1000), which otelcol keeps; the agent answered OK and queued nothing, over HTTP and gRPC."""
    from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans

    from otel.wire import length_delimited

    scope = ScopeSpans(spans=[{"name": "old", "trace_id": b"t" * 16, "span_id": b"s" * 8}] * 3)
    body = length_delimited(1, length_delimited(1000, scope.SerializeToString()))
    before = agent.metric("otelcol_receiver_accepted_spans")
    assert post(agent.http_port, body)[0] == 200
    assert grpc_raw.call(agent.grpc_port, body) == (0, "")
    assert agent.metric("otelcol_receiver_accepted_spans") == before + 6


def _rss_anon(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) << 10 for line in status if line.startswith("RssAnon:"))


def test_grpc_header_blocks_that_never_end_hold_no_memory(agent):
    """An unfinished header block stayed in memory, before any auth, until the idle timeout (300 s):
    64 MiB a connection, and a few such connections put every client over the memory limit."""
    before = _rss_anon(agent.process.pid)
    rogues = [socket.create_connection(("127.0.0.1", agent.grpc_port), timeout=5) for _ in range(3)]
    try:
        for rogue in rogues:
            grpc_raw.endless_header_block(rogue, frames=32, size=1 << 20)
        time.sleep(0.5)
        grown = _rss_anon(agent.process.pid) - before
    finally:
        for rogue in rogues:
            rogue.close()
    print(f"3 connections x 32 MiB of one header block: RssAnon grew {grown / 2**20:.1f} MiB")
    assert grown < 16 << 20
    assert grpc_raw.call(agent.grpc_port, b"") == (0, "")


def test_the_agent_stays_healthy_and_keeps_what_it_accepted(agent):
    before = agent.metric("otelcol_receiver_accepted_spans")
    send_spans("http", agent.http_port, 100)
    for body in (b"\xff garbage", b"\x00" * (LIMIT + 1)):
        post(agent.http_port, body)
    send_spans("grpc", agent.grpc_port, 100)
    assert agent.health("/health/ready")[0] == 200
    assert agent.health()[0] == 200
    assert agent.metric("otelcol_receiver_accepted_spans") == before + 200
    assert agent.metric("edgeagent_queue_items", data_type="traces") == before + 200
