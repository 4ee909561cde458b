"""Fuzzing the real agent over HTTP and gRPC: malformed input gets a 4xx (INVALID_ARGUMENT or
RESOURCE_EXHAUSTED), never a 5xx, and the agent keeps serving."""

from __future__ import annotations

import http.client

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.test_bad_input import TRACE_METHOD, agent
from tests.helpers import grpc_raw
from tests.helpers.hostile import bodies, spans_request

__all__ = ["agent"]
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CONTENT_TYPES = ["application/x-protobuf", "application/json", "text/plain", "application/json; charset=utf-8", ""]
PATHS = ["/v1/traces", "/v1/metrics", "/v1/logs"]
GRPC_FINE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}


@FUZZ
@given(bodies(), st.sampled_from(CONTENT_TYPES), st.sampled_from(PATHS), st.booleans())
def test_http_answers_any_body_with_2xx_or_4xx(agent, encoded, content_type, path, chunked):
    encoding, body = encoded
    connection = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=30)
    headers = {"Content-Type": content_type, "Content-Encoding": encoding}
    try:
        if chunked:
            connection.request("POST", path, body=iter([body[:len(body) // 2], body[len(body) // 2:]]),
                               headers=headers, encode_chunked=True)
        else:
            connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status < 500, (response.status, encoding, body[:40])


@FUZZ
@given(st.one_of(st.binary(max_size=3000), st.integers(0, 30).map(spans_request)),
       st.sampled_from([grpc.Compression.NoCompression, grpc.Compression.Gzip, grpc.Compression.Deflate]))
def test_grpc_answers_any_message_with_ok_or_a_client_error(agent, message, compression):
    with grpc.insecure_channel(f"127.0.0.1:{agent.grpc_port}") as channel:
        try:
            channel.unary_unary(TRACE_METHOD)(message, timeout=10, compression=compression)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
    assert code in GRPC_FINE, (code, message[:40])


@FUZZ
@given(bodies().filter(lambda encoded: encoded[0] in ("gzip", "zlib", "none")))
def test_grpc_answers_any_precompressed_message_with_ok_or_a_client_error(agent, encoded):
    encoding, message = encoded
    grpc_encoding = {"gzip": "gzip", "zlib": "deflate", "none": None}[encoding]
    status, detail = grpc_raw.call(agent.grpc_port, message, grpc_encoding)
    assert status in {code.value[0] for code in GRPC_FINE}, (status, detail, encoding, message[:40])
