"""The `otlp` exporter to a collector on a unix socket (a sidecar's, a node-local one), as grpc-go
dials `unix:` and `unix-abstract:` targets: no name lookup, no proxy, :authority `localhost`."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent import tls
from edgeagent.errors import RetryableError
from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from edgeagent.extensions.metrics import Metrics
from edgeagent.receivers import grpc_call, grpc_server
from edgeagent.signals import Signal
from tests.helpers.configs import grpc_exporter, traces_config
from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.h2_peer import H2Peer
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans

TRACES = f"/{Signal.TRACES.grpc_service}/Export"


@pytest.fixture
def socket_dir() -> Iterator[str]:
    """A short directory: a unix socket's path must fit in 108 bytes, which pytest's tmp_path may not."""
    with tempfile.TemporaryDirectory(prefix="ea-") as directory:
        yield directory


def _request(spans: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        scope.spans.add(name=f"checkout-{index}", span_id=(index + 1).to_bytes(8, "big"), trace_id=bytes(15) + b"\1")
    return request.SerializeToString()


async def _send(endpoint: str, body: bytes, **settings: object) -> OtlpGrpcExporter:
    config = OtlpGrpcConfig.model_validate({"endpoint": endpoint, "tls": {"insecure": True}, **settings})
    exporter = OtlpGrpcExporter("otlp", config)
    await exporter.start()
    try:
        await exporter.send(Signal.TRACES, body)
    finally:
        await exporter.shutdown()
    return exporter


def test_spans_reach_a_grpc_server_on_a_unix_socket_through_the_agent(agents, socket_dir, tmp_path):
    path = os.path.join(socket_dir, "otlp.sock")
    upstream = GrpcUpstream(0, listen=f"unix:{path}").start()
    try:
        config = traces_config(tmp_path / "otlp.yaml", {"otlp": grpc_exporter(f"unix://{path}")})
        agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
        sent = send_spans("http", agent.http_port, 300, batch=100)
        wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="spans upstream over the unix socket")
        assert upstream.span_ids() == sent
        assert agent.terminate() == 0
    finally:
        upstream.stop()


@pytest.mark.parametrize("form", ["unix:{path}", "unix://{path}"])
def test_relative_and_absolute_unix_forms_reach_the_same_socket(socket_dir, form, monkeypatch):
    path = os.path.join(socket_dir, "otlp.sock")
    upstream = GrpcUpstream(0, listen=f"unix:{path}").start()
    try:
        monkeypatch.chdir(socket_dir)
        endpoint = form.format(path=path if "//" in form else "otlp.sock")
        asyncio.run(_send(endpoint, _request(3)))
        assert len(upstream.spans()) == 3
    finally:
        upstream.stop()


def test_spans_reach_a_grpc_server_in_the_abstract_namespace():
    name = f"edgeagent-test-{os.getpid()}-{free_port()}"
    upstream = GrpcUpstream(0, listen=f"unix-abstract:{name}").start()
    try:
        asyncio.run(_send(f"unix-abstract:{name}", _request(5)))
        assert len(upstream.spans()) == 5
    finally:
        upstream.stop()


def test_a_unix_target_sends_localhost_as_authority_unless_one_is_configured(socket_dir):
    async def scenario() -> list[bytes]:
        async with H2Peer("ok", unix_path=os.path.join(socket_dir, "peer.sock")) as peer:
            await _send(f"unix://{peer.unix_path}", _request(1))
            await _send(f"unix://{peer.unix_path}", _request(1), authority="collector.internal")
        return [headers[b":authority"] for headers in peer.headers]

    assert asyncio.run(scenario()) == [b"localhost", b"collector.internal"]


def test_the_proxy_environment_does_not_apply_to_a_unix_socket(socket_dir, monkeypatch):
    # grpc-go's proxy dialer is for TCP targets: a unix socket is dialled directly
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    path = os.path.join(socket_dir, "otlp.sock")
    upstream = GrpcUpstream(0, listen=f"unix:{path}").start()
    try:
        exporter = asyncio.run(_send(f"unix://{path}", _request(2)))
        assert len(upstream.spans()) == 2
        assert exporter.upstream_addresses() == []  # no TCP address to watch
    finally:
        upstream.stop()


def test_tls_over_a_unix_socket_verifies_the_server_as_localhost(certs, socket_dir):
    path = os.path.join(socket_dir, "tls.sock")
    received: list[bytes] = []

    async def export(call: grpc_call.GrpcCall) -> bytes:
        received.append(await call.read())
        return b""

    async def scenario() -> None:
        server = grpc_server.GrpcServer({TRACES: export}, grpc_call.Limits(max_message_bytes=1 << 20))
        server.ssl_context = tls.server_ssl_context(
            tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key), alpn=["h2"])
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        await server.start(None, 0, sock=listener)
        try:
            await _send(f"unix://{path}", _request(4), tls={"ca_file": certs.ca_file})
        finally:
            await server.stop(1)

    asyncio.run(scenario())
    assert received == [_request(4)]


def test_a_missing_socket_fails_retryable_naming_it(socket_dir):
    path = os.path.join(socket_dir, "absent.sock")
    with pytest.raises(RetryableError, match=f"UNAVAILABLE.*unix socket {path}: .*No such file"):
        asyncio.run(_send(f"unix://{path}", _request(1)))


def test_call_durations_name_the_socket_as_server_address_as_otelgrpc_does(socket_dir):
    path = os.path.join(socket_dir, "otlp.sock")
    upstream = GrpcUpstream(0, listen=f"unix:{path}").start()
    metrics = Metrics()

    async def scenario() -> None:
        config = OtlpGrpcConfig.model_validate({"endpoint": f"unix://{path}", "tls": {"insecure": True}})
        exporter = OtlpGrpcExporter("otlp", config, SimpleNamespace(metrics=metrics))
        await exporter.start()
        try:
            await exporter.send(Signal.TRACES, _request(1))
        finally:
            await exporter.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        upstream.stop()
    # otelgrpc's server.address for a unix target is its path, and it has no port
    assert f'server_address="{path}",server_port=""' in metrics.render().decode()
