"""otelcol's confighttp server keys on the OTLP/HTTP receiver, against a real agent and real clients:
CORS (a browser's preflight and its actual request), response_headers, keepalive::idle_timeout
and write_timeout."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import socket
import time

import aiohttp
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from pydantic import ValidationError

from edgeagent.receivers.otlp import HttpConfig
from tests.helpers.net import free_port
from tests.helpers.upstream import Upstream

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        cors:
          allowed_origins: [https://*.test.com, https://test.com]
          allowed_headers: [X-Custom]
          exposed_headers: [X-Trace]
          max_age: 7200
        response_headers:
          X-Served-By: edge
          X-Place: Zürich ∞
        keepalive:
          idle_timeout: 1s
        write_timeout: ${env:WRITE_TIMEOUT}
        compression_algorithms: ["", gzip]
exporters:
  otlp_http:
    endpoint: ${env:UPSTREAM}
    sending_queue:
      enabled: ${env:QUEUED}
    retry_on_failure:
      enabled: false
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp_http]
"""
BODY = ExportTraceServiceRequest().SerializeToString()
# a span: a request of none is answered at once, without reaching an exporter (as by otelcol)
SPAN_BODY = ExportTraceServiceRequest(resource_spans=[{"scope_spans": [{"spans": [
    {"trace_id": b"\x01" * 16, "span_id": b"\x02" * 8, "name": "slow"}]}]}]).SerializeToString()


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    from tests.helpers.agent import AgentProcess
    directory = tmp_path_factory.mktemp("cors")
    config = directory / "cors.yaml"
    config.write_text(CONFIG)
    process = AgentProcess(args=["run", "--config", str(config)], log_path=str(directory / "agent.log"),
                           env={"UPSTREAM": f"http://127.0.0.1:{free_port()}", "QUEUED": "true",
                                "WRITE_TIMEOUT": "30s", "STATE_DIRECTORY": str(directory / "state")})
    process.args += process.ports_overrides()
    process.start()
    yield process
    process.kill()


def _request(agent, method: str, path: str = "/v1/traces", headers: dict[str, str] | None = None,
             body: bytes = b"") -> tuple[int, dict[str, str]]:
    async def go() -> tuple[int, dict[str, str]]:
        async with aiohttp.ClientSession() as session, session.request(
                method, f"http://127.0.0.1:{agent.http_port}{path}", headers=headers or {}, data=body) as response:
            await response.read()
            return response.status, {key.lower(): value for key, value in response.headers.items()}
    return asyncio.run(go())


def _preflight(agent, origin: str, request_headers: str = "content-type") -> tuple[int, dict[str, str]]:
    return _request(agent, "OPTIONS", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                               "Access-Control-Request-Headers": request_headers})


@pytest.mark.parametrize("origin", ["https://www.test.com", "https://foo.test.com", "https://test.com"])
def test_cors_preflight_from_an_allowed_origin_is_answered_with_its_allowances(agent, origin):
    status, headers = _preflight(agent, origin, "content-type, x-custom")
    assert status == 204
    assert headers["access-control-allow-origin"] == origin
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-allow-headers"] == "content-type, x-custom"
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-max-age"] == "7200"
    assert headers["x-served-by"] == "edge"  # response_headers reach preflight answers too


@pytest.mark.parametrize(("origin", "asked"), [
    ("https://wwwtest.com", "content-type"),  # the wildcard stands for a subdomain, not any prefix
    ("https://evil.example", "content-type"),
    ("https://www.test.com", "x-other"),  # a header nobody allowed
])
def test_cors_preflight_that_is_not_allowed_gets_no_allowances(agent, origin, asked):
    status, headers = _preflight(agent, origin, asked)
    assert status == 204
    assert "access-control-allow-origin" not in headers


def test_cors_request_from_an_allowed_origin_exposes_headers_and_stores_the_data(agent):
    status, headers = _request(agent, "POST", headers={"Origin": "https://app.test.com",
                                                       "Content-Type": "application/x-protobuf"}, body=BODY)
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.test.com"
    assert headers["access-control-expose-headers"] == "X-Trace"
    assert headers["x-served-by"] == "edge"


def test_cors_request_from_another_origin_is_served_without_cors_headers(agent):
    status, headers = _request(agent, "POST", headers={"Origin": "https://evil.example",
                                                       "Content-Type": "application/x-protobuf"}, body=BODY)
    assert status == 200 and "access-control-allow-origin" not in headers


def test_response_headers_are_on_error_answers_too(agent):
    status, headers = _request(agent, "POST", headers={"Content-Type": "text/plain"}, body=b"x")
    assert status == 415 and headers["x-served-by"] == "edge"


def test_response_headers_beyond_latin_1_go_out_as_utf_8_as_otelcol_sends_them(agent):
    """A value the server could not encode made every answer fail: the connection closed unanswered."""
    with socket.create_connection(("127.0.0.1", agent.http_port), timeout=10) as connection:
        connection.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                           b"Connection: close\r\nContent-Length: 0\r\n\r\n")
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200") and "X-Place: Zürich ∞\r\n".encode() in answer


@pytest.mark.parametrize("headers", [{"X-Bad": "a\r\nSet-Cookie: x"}, {"X Bad": "a"}, {"X-Bad": "a\x00"}])
def test_response_headers_that_cannot_be_sent_are_config_errors(headers):
    with pytest.raises(ValidationError, match="response_headers"):
        HttpConfig(response_headers=headers)


def test_idle_timeout_closes_a_connection_that_waits_for_its_next_request(agent):
    with socket.create_connection(("127.0.0.1", agent.http_port), timeout=10) as connection:
        connection.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                           b"Content-Length: 0\r\n\r\n")
        assert connection.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert connection.recv(65536) == b""  # closed by the agent, not by the 10 s socket timeout
        assert time.monotonic() - started < 5


def test_write_timeout_closes_the_connection_when_the_answer_is_late(agents, tmp_path):
    upstream = Upstream(free_port()).start()
    try:
        upstream.hang = 6.0  # without a queue the client's answer waits for the upstream's
        config = tmp_path / "slow.yaml"
        config.write_text(CONFIG)
        process = agents(["run", "--config", str(config)],
                         env={"UPSTREAM": upstream.url, "QUEUED": "false", "WRITE_TIMEOUT": "1s"})
        with socket.create_connection(("127.0.0.1", process.http_port), timeout=10) as connection:
            connection.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(SPAN_BODY) + SPAN_BODY)
            started = time.monotonic()
            assert connection.recv(65536) == b""  # no answer: the connection is closed, as otelcol's
            assert time.monotonic() - started < 4
    finally:
        upstream.stop()


@pytest.mark.parametrize(("encoding", "body", "status"), [
    ("gzip", gzip.compress(BODY, mtime=0), 200),  # no timestamp: every test worker collects the same test
    ("", BODY, 200),
    ("zstd", b"\x28\xb5\x2f\xfd\x00\x00\x01\x00\x00", 400),  # known, but not in compression_algorithms
], ids=["gzip", "identity", "zstd-not-listed"])
def test_compression_algorithms_limits_the_content_encodings_accepted(agent, encoding, body, status):
    headers = {"Content-Type": "application/x-protobuf"}
    if encoding:
        headers["Content-Encoding"] = encoding
    assert _request(agent, "POST", headers=headers, body=body)[0] == status


PATHS_CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        traces_url_path: otlp/traces
        logs_url_path: /custom/logs?tenant=a
exporters:
  otlp_http:
    endpoint: ${env:UPSTREAM}
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp_http]
    logs:
      receivers: [otlp]
      exporters: [otlp_http]
"""


def test_url_paths_are_served_at_the_path_of_the_url_made_absolute_as_otelcol_serves_them(agents, tmp_path):
    config = tmp_path / "paths.yaml"
    config.write_text(PATHS_CONFIG)
    process = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
                     env={"UPSTREAM": f"http://127.0.0.1:{free_port()}"})
    headers = {"Content-Type": "application/json"}
    assert _request(process, "POST", "/otlp/traces", headers=headers, body=b"{}")[0] == 200
    assert _request(process, "POST", "/custom/logs", headers=headers, body=b"{}")[0] == 200


SUBTREE_CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:PORT
        traces_url_path: /v1/t/
exporters:
  SINK:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [SINK]
"""


def _answers(port: int) -> list[tuple[int, str | None, bytes]]:
    """Status, Location and body of the requests where a path ending in `/` differs from one without."""
    answers = []
    for method, path, body in [("POST", "/v1/t/", b"{}"), ("POST", "/v1/t/x/y", b"null"), ("POST", "/v1/t?q=1", b"{}"),
                               ("GET", "/v1/t", b""), ("POST", "/v1/tx", b"{}"), ("POST", "/v1/traces", b"{}")]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        answers.append((response.status, response.getheader("Location"), response.read() if method == "GET" else b""))
        connection.close()
    return answers


def test_a_url_path_ending_in_a_slash_serves_its_subtree_and_redirects_the_bare_path_as_otelcol(agents, otelcol,
                                                                                                 tmp_path):
    """Go's ServeMux reads a pattern ending in `/` as a subtree and answers the path without the
    slash with a 307 to it; the agent served that exact path alone, and 404 below it."""
    collector_port = free_port()
    otelcol(SUBTREE_CONFIG.replace("PORT", str(collector_port)).replace("SINK", "nop"))
    config = tmp_path / "subtree.yaml"
    config.write_text(SUBTREE_CONFIG.replace("SINK", "debug") + "  extensions: [health_check]\nextensions:\n"
                                                                "  health_check:\n")
    agent_port = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")]).http_port
    expected = _answers(collector_port)
    assert [status for status, _, _ in expected] == [200, 200, 307, 307, 404, 404]
    assert _answers(agent_port) == expected


ROOT_CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:PORT
        traces_url_path: /
exporters:
  SINK:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [SINK]
    logs:
      receivers: [otlp]
      exporters: [SINK]
"""


def _root_answers(port: int) -> list[int]:
    plain = {"Content-Type": "application/x-protobuf"}
    answers = []
    for method, path, body in [("POST", "/health", SPAN_BODY), ("POST", "/v1/traces", SPAN_BODY),
                               ("POST", "/anything/else", SPAN_BODY), ("GET", "/health", b""),
                               ("POST", "/v1/logs", BODY)]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request(method, path, body=body, headers=plain if method == "POST" else {})
        answers.append(connection.getresponse().status)
        connection.close()
    return answers


def test_a_root_url_path_takes_every_path_health_included_so_a_post_there_is_kept_as_otelcol_keeps_it(
        agents, otelcol, tmp_path):
    """traces_url_path `/` is a subtree pattern in Go's ServeMux: every path no other pattern holds
    goes to the traces handler, /health too. That handler keeps a POST to /health and answers any
    other method 405; the agent answered GET /health as its health and POST /health 405 (the
    data refused where otelcol keeps it). Decision: a user who serves OTLP at `/` asks for every
    path to be OTLP, and the port's /health is the agent's own extra (otelcol has none there),
    answered only where no signal is served; so it follows otelcol, and health stays served by the
    health_check extension's port. Keeping GET /health would lose no data either, but would make
    one path's meaning differ from otelcol's for no request that carries data."""
    collector_port = free_port()
    otelcol(ROOT_CONFIG.replace("PORT", str(collector_port)).replace("SINK", "nop"))
    config = tmp_path / "root.yaml"
    config.write_text(ROOT_CONFIG.replace("SINK", "debug") + "  extensions: [health_check]\nextensions:\n"
                                                             "  health_check:\n")
    process = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")])
    expected = _root_answers(collector_port)
    assert expected == [200, 200, 200, 405, 200]
    assert _root_answers(process.http_port) == expected
    assert process.metric("otelcol_receiver_accepted_spans") == 3
    assert process.health("/health")[0] == 200  # the health_check extension's port answers


def test_a_zero_max_request_body_size_is_otelcols_default_not_a_config_error():
    assert HttpConfig(max_request_body_size=0).max_request_body_size == 20 << 20
    assert HttpConfig(max_request_body_size=-1).max_request_body_size == 20 << 20  # otelcol: <= 0 is the default


def test_two_signals_served_at_one_path_stop_the_start_naming_it_as_otelcols_mux_refuses_them(agents, tmp_path):
    """Else the last signal's handler took the path: spans parsed as an ExportLogsServiceRequest
    (the same field numbers) were answered 200 and stored as garbage logs."""
    config = tmp_path / "paths.yaml"
    config.write_text(PATHS_CONFIG.replace("/custom/logs?tenant=a", "/otlp/traces"))
    with pytest.raises(RuntimeError) as caught:
        agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
               env={"UPSTREAM": f"http://127.0.0.1:{free_port()}"})
    assert "/otlp/traces" in str(caught.value) and "logs_url_path" in str(caught.value), str(caught.value)


def test_an_empty_compression_algorithms_decodes_nothing_and_serves_plain_bodies_as_otelcol_does(agents, tmp_path):
    """otelcol installs no decoder at all for `compression_algorithms: []`: bodies are read as they
    come. Every request got 400 here, the uncompressed ones too, and their senders dropped them."""
    process = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", f"http://127.0.0.1:{free_port()}",
                      "--set", "receivers::otlp::protocols::http::compression_algorithms=[]"])
    plain = {"Content-Type": "application/x-protobuf"}
    assert _request(process, "POST", headers=plain, body=BODY)[0] == 200
    assert _request(process, "POST", headers={**plain, "Content-Encoding": "identity"}, body=BODY)[0] == 200
    gzipped = gzip.compress(b"\x0a\x00" * 64, mtime=0)  # read as it came: no ExportTraceServiceRequest
    assert _request(process, "POST", headers={**plain, "Content-Encoding": "gzip"}, body=gzipped)[0] == 400
