"""TLS, mTLS and bearer tokens end to end: the real agent, the OpenTelemetry SDK, an HTTPS upstream."""

from __future__ import annotations

import http.client
import os
import ssl
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.certs import Authority, replace
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream

CONFIG = os.path.join(os.path.dirname(__file__), "..", "testdata", "e2e", "tls-auth.yaml")
CLIENT_TOKEN = "client-token-5e0c93b1a7"
UPSTREAM_TOKEN = "upstream-token-b83f27d4c6"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture
def https_upstream(certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    server = Upstream(free_port(), ssl_context=context).start()
    yield server
    server.stop()


@pytest.fixture
def start_agent(agents, certs, https_upstream, tmp_path):
    tokens = tmp_path / "client.tokens"
    tokens.write_text(CLIENT_TOKEN + "\n")

    def start(*extra: str):
        env = {"SERVER_CERT": certs.server_cert, "SERVER_KEY": certs.server_key, "UPSTREAM": https_upstream.url,
               "UPSTREAM_CA": certs.ca_file, "CLIENT_TOKENS": str(tokens), "UPSTREAM_TOKEN": UPSTREAM_TOKEN}
        return agents(["run", "--config", CONFIG, "--state-dir", str(tmp_path / "state"),
                       "--set", "service::telemetry::logs::level=debug", *extra], env=env)

    return start


def _client_context(ca_file: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if cert:
        context.load_cert_chain(cert, key)
    return context


def _post(port: int, context: ssl.SSLContext, token: str | None, query: str = "") -> tuple[int, str]:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="raw", span_id=b"\x01" * 8, trace_id=b"\x02" * 16)
    headers = {"Content-Type": "application/x-protobuf"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", "/v1/traces" + query, body=request.SerializeToString(), headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def _grpc_export(port: int, credentials: grpc.ChannelCredentials, token: str | None) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        try:
            channel.unary_unary(EXPORT)(ExportTraceServiceRequest().SerializeToString(), metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def _grpc_credentials(certs, with_client_cert: bool = False) -> grpc.ChannelCredentials:
    with open(certs.ca_file, "rb") as ca:
        root = ca.read()
    if not with_client_cert:
        return grpc.ssl_channel_credentials(root)
    with open(certs.client_key, "rb") as key, open(certs.client_cert, "rb") as cert:
        return grpc.ssl_channel_credentials(root, key.read(), cert.read())


def test_sdk_exporters_send_over_tls_with_a_bearer_token_and_the_data_reaches_the_https_upstream(
        start_agent, certs, https_upstream, monkeypatch):
    # requests lets these variables replace the CA file the SDK's HTTP exporter gives its session
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    agent = start_agent()
    token = {"authorization": f"Bearer {CLIENT_TOKEN}"}
    sent = send_spans("http", agent.http_port, 40, certificate_file=certs.ca_file, headers=token)
    sent |= send_spans("grpc", agent.grpc_port, 30, credentials=_grpc_credentials(certs), headers=token)
    wait_until(lambda: https_upstream.span_ids() >= sent, timeout=30, message="spans at the HTTPS upstream")
    # the otlphttp exporter's own token, added to every request it sends
    assert {r.headers.get("Authorization") for r in https_upstream.received("traces")} == {f"Bearer {UPSTREAM_TOKEN}"}
    assert agent.terminate() == 0


def test_wrong_or_missing_token_gets_401_over_http_and_unauthenticated_over_grpc(start_agent, certs, https_upstream):
    agent = start_agent()
    context = _client_context(certs.ca_file)
    for token in ("wrong-token", None):
        status, body = _post(agent.http_port, context, token)
        assert status == 401 and "credentials" in body
        assert _grpc_export(agent.grpc_port, _grpc_credentials(certs), token) == grpc.StatusCode.UNAUTHENTICATED
    assert _post(agent.http_port, context, CLIENT_TOKEN)[0] == 200
    assert _grpc_export(agent.grpc_port, _grpc_credentials(certs), CLIENT_TOKEN) == grpc.StatusCode.OK
    assert agent.metric("otelcol_receiver_accepted_spans") == 1  # refused requests never reached the pipeline


@pytest.mark.parametrize(("content_type", "answered_in"), [
    ("application/x-protobuf", "application/x-protobuf"), ("application/json; charset=utf-8", "application/json"),
    ("text/plain", "application/json")])  # otelcol's errorHandler: JSON for any type but protobuf
def test_a_401_carries_an_unauthenticated_status_as_otlp_asks_of_every_error_answer(start_agent, certs,
                                                                                  content_type, answered_in):
    agent = start_agent()
    connection = http.client.HTTPSConnection("127.0.0.1", agent.http_port, context=_client_context(certs.ca_file),
                                             timeout=10)
    try:
        connection.request("POST", "/v1/traces", body=b"", headers={"Content-Type": content_type})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert (response.status, response.getheader("Content-Type")) == (401, answered_in)
    status = (status_pb2.Status.FromString(body) if answered_in == "application/x-protobuf"
              else json_format.Parse(body, status_pb2.Status()))
    assert status.code == grpc.StatusCode.UNAUTHENTICATED.value[0] and "credentials" in status.message


def test_request_params_let_a_query_parameter_carry_the_token_in_place_of_the_header(start_agent, certs,
                                                                                     https_upstream):
    query = "?Authorization=" + quote(f"Bearer {CLIENT_TOKEN}")
    agent = start_agent()
    context = _client_context(certs.ca_file)
    assert _post(agent.http_port, context, None, query)[0] == 401  # not without request_params
    agent.terminate()
    agent = start_agent("--set", "receivers::otlp::protocols::http::auth::request_params=[Authorization]")
    assert _post(agent.http_port, context, None, query)[0] == 200
    assert _post(agent.http_port, context, "wrong-token", query)[0] == 200  # the query's value wins, as in otelcol
    assert _post(agent.http_port, context, CLIENT_TOKEN, "?Authorization=wrong")[0] == 401
    assert _post(agent.http_port, context, CLIENT_TOKEN, "?other=1")[0] == 200


def test_mtls_refuses_a_client_without_certificate_and_serves_one_with_it(start_agent, certs, https_upstream):
    agent = start_agent("--set", f"receivers::otlp::protocols::http::tls::client_ca_file={certs.ca_file}",
                        "--set", f"receivers::otlp::protocols::grpc::tls::client_ca_file={certs.ca_file}")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _post(agent.http_port, _client_context(certs.ca_file), CLIENT_TOKEN)
    assert _grpc_export(agent.grpc_port, _grpc_credentials(certs), CLIENT_TOKEN) == grpc.StatusCode.UNAVAILABLE

    with_cert = _client_context(certs.ca_file, certs.client_cert, certs.client_key)
    assert _post(agent.http_port, with_cert, CLIENT_TOKEN)[0] == 200
    assert _grpc_export(agent.grpc_port, _grpc_credentials(certs, with_client_cert=True),
                        CLIENT_TOKEN) == grpc.StatusCode.OK
    wait_until(lambda: len(https_upstream.spans()) >= 1, timeout=30, message="the mTLS client's span upstream")


def test_replaced_receiver_certificate_is_served_without_restart(start_agent, certs, tmp_path):
    agent = start_agent()
    rotated = Authority(str(tmp_path), "rotated CA")
    new_cert, new_key = rotated.issue("server-rotated")
    trusts_only_new = _client_context(rotated.ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        _post(agent.http_port, trusts_only_new, CLIENT_TOKEN)

    replace(new_key, certs.server_key)
    replace(new_cert, certs.server_cert)
    assert _post(agent.http_port, trusts_only_new, CLIENT_TOKEN)[0] == 200
    assert _grpc_export(agent.grpc_port, grpc.ssl_channel_credentials(open(rotated.ca_file, "rb").read()),
                        CLIENT_TOKEN) == grpc.StatusCode.OK
    assert agent.process.poll() is None


def test_replaced_token_file_is_used_without_restart(start_agent, certs, tmp_path):
    agent = start_agent()
    context = _client_context(certs.ca_file)
    replace_with = tmp_path / "next.tokens"
    replace_with.write_text("rotated-token-0b5d\n")
    replace(str(replace_with), str(tmp_path / "client.tokens"))
    assert _post(agent.http_port, context, CLIENT_TOKEN)[0] == 401
    assert _post(agent.http_port, context, "rotated-token-0b5d")[0] == 200


def test_logs_never_show_a_token(start_agent, certs, https_upstream):
    agent = start_agent()
    context = _client_context(certs.ca_file)
    _post(agent.http_port, context, "wrong-token-3c9e")
    _grpc_export(agent.grpc_port, _grpc_credentials(certs), "wrong-token-3c9e")
    assert _post(agent.http_port, context, CLIENT_TOKEN)[0] == 200
    wait_until(lambda: len(https_upstream.spans()) >= 1, timeout=30, message="a span upstream")
    assert agent.terminate() == 0
    log = agent.log()
    assert "bearertokenauth" in log or "receiver listening" in log, log  # the log is the agent's, with content
    for secret in (CLIENT_TOKEN, UPSTREAM_TOKEN, "wrong-token-3c9e"):
        assert secret not in log, f"{secret} was logged:\n{log}"
