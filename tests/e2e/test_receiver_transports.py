"""The OTLP receiver's `transport` (otelcol's confignet) against a real agent and real clients:
unix sockets for gRPC (grpcio, the OpenTelemetry SDK's exporter) and HTTP (aiohttp), and tcp4 /
tcp6 binding one address family only."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import tempfile
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.helpers.net import free_port, wait_until

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        transport: ${env:GRPC_TRANSPORT}
        endpoint: ${env:GRPC_ENDPOINT}
      http:
        transport: ${env:HTTP_TRANSPORT}
        endpoint: ${env:HTTP_ENDPOINT}
exporters:
  otlp_http:
    endpoint: ${env:UPSTREAM}
    retry_on_failure:
      initial_interval: 100ms
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp_http]
"""


@pytest.fixture
def sockets():
    """A short directory for socket files (a socket path holds at most 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="ea-sock-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _agent(agents, tmp_path, upstream, env: dict[str, str]):
    from tests.helpers.agent import AgentProcess
    config = tmp_path / "transports.yaml"
    config.write_text(CONFIG)
    probe = AgentProcess(args=[])
    health_and_metrics = probe.ports_overrides()[4:]  # free ports; the receivers' endpoints are the test's
    return agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state"), *health_and_metrics],
                  env={"UPSTREAM": upstream.url, **env}, ports=probe, port_overrides=False)


def _sdk_spans_over_unix(path: Path, count: int) -> set[bytes]:
    provider = TracerProvider(resource=Resource.create({"service.name": "unix"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"unix://{path}", insecure=True)))
    tracer = provider.get_tracer("edgeagent.tests")
    ids = set()
    for index in range(count):
        with tracer.start_as_current_span(f"over-unix-{index}") as span:
            ids.add(span.get_span_context().span_id.to_bytes(8, "big"))
    provider.shutdown()
    return ids


def _request_with_span(name: str) -> tuple[ExportTraceServiceRequest, bytes]:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = name, os.urandom(16), os.urandom(8)
    return request, span.span_id


async def _post_unix(path: Path, body: bytes) -> int:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session, \
            session.post("http://agent/v1/traces", data=body,
                         headers={"Content-Type": "application/x-protobuf"}) as response:
        await response.read()
        return response.status


def test_grpc_and_http_are_served_on_unix_sockets_and_the_files_go_at_stop(agents, tmp_path, upstream, sockets):
    grpc_path, http_path = sockets / "grpc.sock", sockets / "http.sock"
    agent = _agent(agents, tmp_path, upstream, {"GRPC_TRANSPORT": "unix", "GRPC_ENDPOINT": str(grpc_path),
                                                "HTTP_TRANSPORT": "unix", "HTTP_ENDPOINT": str(http_path)})
    umask = os.umask(0)
    os.umask(umask)
    for path in (grpc_path, http_path):  # created as Go's net.Listen creates it: the umask decides the mode
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask

    expected = _sdk_spans_over_unix(grpc_path, 20)
    request, span_id = _request_with_span("over-unix-http")
    assert asyncio.run(_post_unix(http_path, request.SerializeToString())) == 200
    expected.add(span_id)
    wait_until(lambda: expected <= upstream.span_ids(), timeout=20, message="spans upstream")

    assert agent.terminate() == 0
    assert not grpc_path.exists() and not http_path.exists()


def test_a_socket_file_nobody_listens_on_is_replaced(agents, tmp_path, upstream, sockets):
    stale = sockets / "grpc.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(stale))  # what a killed process leaves: the file, and nobody listening
    left.close()
    _agent(agents, tmp_path, upstream, {"GRPC_TRANSPORT": "unix", "GRPC_ENDPOINT": str(stale),
                                        "HTTP_TRANSPORT": "tcp", "HTTP_ENDPOINT": f"127.0.0.1:{free_port()}"})
    expected = _sdk_spans_over_unix(stale, 3)
    wait_until(lambda: expected <= upstream.span_ids(), timeout=20, message="spans upstream")


@pytest.mark.parametrize("occupant", ["listening socket", "regular file"])
def test_a_path_in_use_stops_the_start_naming_it(agents, tmp_path, upstream, sockets, occupant):
    path = sockets / "http.sock"
    holder = None
    if occupant == "listening socket":
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.bind(str(path))
        holder.listen()
    else:
        path.write_text("not a socket")
    try:
        with pytest.raises(RuntimeError) as caught:
            _agent(agents, tmp_path, upstream, {"GRPC_TRANSPORT": "tcp", "GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
                                                "HTTP_TRANSPORT": "unix", "HTTP_ENDPOINT": str(path)})
        reason = "another process listens" if holder is not None else "not a socket"
        assert str(path) in str(caught.value) and reason in str(caught.value), str(caught.value)
        assert path.exists()  # never removed: it is someone else's
    finally:
        if holder is not None:
            holder.close()


def _connects(family: socket.AddressFamily, host: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) == 0


def test_tcp4_and_tcp6_listen_on_their_address_family_only(agents, tmp_path, upstream):
    grpc_port, http_port = free_port(), free_port()
    _agent(agents, tmp_path, upstream, {"GRPC_TRANSPORT": "tcp4", "GRPC_ENDPOINT": f":{grpc_port}",
                                        "HTTP_TRANSPORT": "tcp6", "HTTP_ENDPOINT": f":{http_port}"})
    assert _connects(socket.AF_INET, "127.0.0.1", grpc_port)
    assert not _connects(socket.AF_INET6, "::1", grpc_port)
    assert _connects(socket.AF_INET6, "::1", http_port)
    assert not _connects(socket.AF_INET, "127.0.0.1", http_port)  # IPV6_V6ONLY, as Go's tcp6


# ---- beside otelcol 0.165: the same receiver settings, the same behaviour -----------------

def _otelcol_config(grpc_path: Path, http_path: Path) -> dict:
    return {"receivers": {"otlp": {"protocols": {"grpc": {"transport": "unix", "endpoint": str(grpc_path)},
                                                 "http": {"transport": "unix", "endpoint": str(http_path)}}}},
            "exporters": {"debug": {}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}}


def _grpc_export_over_unix(path: Path) -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
    request, _ = _request_with_span("over-unix-grpc")
    with grpc.insecure_channel(f"unix:{path}") as channel:
        TraceServiceStub(channel).Export(request, timeout=10)


def _observe(grpc_path: Path, http_path: Path) -> dict:
    request, _ = _request_with_span("over-unix-http")
    _grpc_export_over_unix(grpc_path)
    return {"modes": [stat.filemode(path.stat().st_mode) for path in (grpc_path, http_path)],
            "http": asyncio.run(_post_unix(http_path, request.SerializeToString()))}


def test_unix_sockets_behave_as_otelcols(agents, otelcol, tmp_path, upstream, sockets):
    seen = {}
    for name in ("otelcol", "edgeagent"):
        grpc_path, http_path = sockets / f"{name}-g.sock", sockets / f"{name}-h.sock"
        if name == "otelcol":
            collector = otelcol(_otelcol_config(grpc_path, http_path))
            seen[name] = _observe(grpc_path, http_path)
            collector.stop()
        else:
            agent = _agent(agents, tmp_path, upstream, {"GRPC_TRANSPORT": "unix", "GRPC_ENDPOINT": str(grpc_path),
                                                        "HTTP_TRANSPORT": "unix", "HTTP_ENDPOINT": str(http_path)})
            seen[name] = _observe(grpc_path, http_path)
            agent.terminate()
        seen[name]["left_at_stop"] = [path.exists() for path in (grpc_path, http_path)]
    assert seen["edgeagent"] == seen["otelcol"]
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.filemode(stat.S_IFSOCK | (0o777 & ~umask))  # both leave the mode to the umask
    assert seen["otelcol"] == {"modes": [mode, mode], "http": 200, "left_at_stop": [False, False]}


@pytest.mark.parametrize("occupant", ["listening socket", "regular file", "stale socket"])
def test_what_is_at_the_path_decides_the_start_as_in_otelcol_but_for_a_stale_socket(
        agents, otelcol, tmp_path, upstream, sockets, occupant):
    """otelcol fails on any file at the path; edgeagent replaces a socket nobody listens on, so that a
    killed agent starts again, and fails on the rest as otelcol does."""
    grpc_path, http_path = sockets / "g.sock", sockets / "h.sock"
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if occupant == "regular file":
        http_path.write_text("not a socket")
    else:
        holder.bind(str(http_path))
        if occupant == "listening socket":
            holder.listen()
        else:
            holder.close()
    started = {}
    try:
        for name in ("otelcol", "edgeagent"):
            try:
                if name == "otelcol":
                    otelcol(_otelcol_config(grpc_path, http_path)).stop()
                else:
                    _agent(agents, tmp_path, upstream, {"GRPC_TRANSPORT": "unix", "GRPC_ENDPOINT": str(grpc_path),
                                                        "HTTP_TRANSPORT": "unix", "HTTP_ENDPOINT": str(http_path)})
                started[name] = True
            except RuntimeError as exc:
                assert str(http_path) in str(exc)
                started[name] = False
    finally:
        holder.close()
    assert started == {"otelcol": False, "edgeagent": occupant == "stale socket"}


def test_a_reload_that_changes_a_unix_socket_receiver_serves_on_the_same_path(agents, tmp_path, upstream, sockets):
    http_path = sockets / "http.sock"
    agent = _agent(agents, tmp_path, upstream, {"GRPC_TRANSPORT": "tcp", "GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
                                                "HTTP_TRANSPORT": "unix", "HTTP_ENDPOINT": str(http_path)})
    config = tmp_path / "transports.yaml"
    config.write_text(CONFIG.replace("endpoint: ${env:HTTP_ENDPOINT}",
                                     "endpoint: ${env:HTTP_ENDPOINT}\n        include_metadata: true"))
    os.kill(agent.process.pid, signal.SIGHUP)  # the old receiver stops (its file goes), the new one binds
    wait_until(lambda: agent.metric("edgeagent_config_reloads", result="applied") == 1, timeout=15,
               message="reload applied")
    request, span_id = _request_with_span("after-reload")
    assert asyncio.run(_post_unix(http_path, request.SerializeToString())) == 200
    wait_until(lambda: span_id in upstream.span_ids(), timeout=20, message="span upstream")
