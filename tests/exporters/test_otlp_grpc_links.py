"""The `otlp` exporter in a running agent: what its gRPC link survives, and what it costs the process.

- The agent speaks gRPC on its own HTTP/2 stack both ways, so it never imports grpcio (its C
  core costs start-up time and memory): checked in a started agent that received over gRPC and
  exported over gRPC.
- Two agents, edge to hub, over mTLS with a bearer token: every span arrives.
- An upstream that answers HTTP/1.1 is named in the exporter's health, and the data waits in
  the queue for a real gRPC server.
- An upstream that restarts, or that sends GOAWAY on every connection after a second (otelcol's
  `max_connection_age`, here our own receiver in a second agent), loses no item and doubles none.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.configretry import RetryConfig
from edgeagent.exporters.chain import ExportChain
from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from edgeagent.signals import Signal
from tests.exporters.test_chain import Host
from tests.exporters.test_otlphttp_broken_answers import _DeadLetters
from tests.helpers.agent import AgentProcess
from tests.helpers.configs import FAST_RETRY, grpc_exporter, http_exporter, traces_config
from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans

pytestmark = pytest.mark.e2e  # every test here starts agent processes

# runs the agent's CLI and, when the process exits, writes the names of the modules it imported
_RECORD_MODULES = """
import atexit, os, runpy, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write("\\n".join(sorted(sys.modules))))
runpy.run_module("edgeagent", run_name="__main__", alter_sys=True)
"""


def test_a_started_agent_with_grpc_receiver_and_exporter_never_imports_grpcio(tmp_path):
    upstream = GrpcUpstream(free_port()).start()
    out = tmp_path / "modules.txt"
    config = traces_config(tmp_path / "agent.yaml", {"otlp": grpc_exporter(upstream.endpoint)})
    agent = AgentProcess(args=["run", "--config", config, "--state-dir", str(tmp_path / "state")],
                         env={"MODULES_OUT": str(out)}, log_path=str(tmp_path / "agent.log"),
                         command=[sys.executable, "-c", _RECORD_MODULES])
    agent.args += agent.ports_overrides()
    try:
        agent.start()
        sent = send_spans("grpc", agent.grpc_port, 50) | send_spans("http", agent.http_port, 50)
        wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="spans exported over gRPC")
        assert agent.terminate() == 0
    finally:
        agent.kill()
        upstream.stop()
    modules = out.read_text().split()
    assert "edgeagent.exporters.grpc_client" in modules and "edgeagent.receivers.grpc_server" in modules
    assert [name for name in modules if name == "grpc" or name.startswith(("grpc.", "grpc_"))] == []


def test_an_upstream_restarting_mid_stream_loses_and_doubles_no_span(agents, tmp_path):
    upstream = GrpcUpstream(free_port()).start()
    config = traces_config(tmp_path / "agent.yaml", {"otlp": grpc_exporter(
        upstream.endpoint, sending_queue={"num_consumers": 4}, timeout="2s")})
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
    sent: set[bytes] = set()
    try:
        for _ in range(4):
            sent |= send_spans("http", agent.http_port, 2000, batch=100)
            upstream.stop()  # calls in flight end with the connection
            time.sleep(0.3)
            upstream = GrpcUpstream(upstream.port, requests=upstream.requests, calls=upstream.calls).start()
        wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="every span upstream")
        assert upstream.span_ids() == sent
        # a call the upstream took just before it stopped may be sent again (at least once),
        # but never more than that one batch
        assert len(upstream.spans()) - len(sent) <= 4 * 100 * 4, (len(upstream.spans()), len(sent))
        assert agent.terminate() == 0
    finally:
        upstream.stop()


def _hub(tmp_path, upstream, grpc: dict, extensions: dict | None = None, **exporter) -> AgentProcess:
    """A second agent: our own OTLP/gRPC receiver (`grpc` settings) forwarding to `upstream` over HTTP
    (`exporter`: settings of its exporter)."""
    extensions = {"health_check": {}, **(extensions or {})}
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"grpc": grpc}}},
        "exporters": {"otlphttp": http_exporter(upstream.url, **exporter)},
        "extensions": extensions,
        "service": {"extensions": list(extensions),
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}}},
    }))
    hub = AgentProcess(args=["run", "--config", str(config), "--state-dir", str(tmp_path / "hub")],
                       log_path=str(tmp_path / "hub.log"), grpc_port=int(grpc["endpoint"].rpartition(":")[2]))
    hub.args += ["--set", f"extensions::health_check::endpoint=127.0.0.1:{hub.health_port}",
                 "--set", "service::telemetry::metrics::readers=[{pull: {exporter: {prometheus: "
                          f"{{host: 127.0.0.1, port: {hub.metrics_port}}}}}}}}}]"]
    return hub.start()


def test_goaway_every_second_from_our_own_receiver_loses_and_doubles_no_span(agents, upstream, tmp_path):
    hub_grpc = free_port()
    hub = _hub(tmp_path, upstream, {
        "endpoint": f"127.0.0.1:{hub_grpc}",
        "keepalive": {"server_parameters": {"max_connection_age": "1s", "max_connection_age_grace": "5s"}}})
    edge_config = traces_config(tmp_path / "edge.yaml", {"otlp": grpc_exporter(
        f"127.0.0.1:{hub_grpc}", compression="zstd", sending_queue={"num_consumers": 4},
        retry_on_failure=FAST_RETRY)})
    try:
        edge = agents(["run", "--config", edge_config, "--state-dir", str(tmp_path / "edge")])
        sent: set[bytes] = set()
        started = time.monotonic()
        while time.monotonic() - started < 4:  # several connection ages
            sent |= send_spans("http", edge.http_port, 500, batch=50)
        wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="every span upstream")
        assert upstream.span_ids() == sent
        assert len(upstream.spans()) == len(sent)  # GOAWAY lets calls in flight finish: nothing twice
        assert edge.terminate() == 0
        assert hub.terminate() == 0
    finally:
        hub.kill()


def test_agent_to_agent_over_mtls_with_a_bearer_token_delivers_every_span(agents, upstream, certs, tmp_path):
    hub_grpc = free_port()
    token = {"bearertokenauth": {"token": "hub-t0ken"}}
    hub = _hub(tmp_path, upstream, {
        "endpoint": f"127.0.0.1:{hub_grpc}", "auth": {"authenticator": "bearertokenauth"},
        "tls": {"cert_file": certs.server_cert, "key_file": certs.server_key, "client_ca_file": certs.ca_file}},
        extensions=token)
    exporter = {"endpoint": f"127.0.0.1:{hub_grpc}", "compression": "snappy",
                "auth": {"authenticator": "bearertokenauth"},
                "tls": {"ca_file": certs.ca_file, "cert_file": certs.client_cert, "key_file": certs.client_key},
                "retry_on_failure": FAST_RETRY}
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "exporters": {"otlp": exporter},
        "extensions": {"health_check": {}, **token},
        "service": {"extensions": ["health_check", "bearertokenauth"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp"]}}},
    }))
    try:
        edge = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "edge")])
        sent = send_spans("http", edge.http_port, 400, batch=100)
        wait_until(lambda: upstream.span_ids() >= sent, timeout=30, interval=0.25, message="every span upstream")
        assert upstream.span_ids() == sent and len(upstream.spans()) == len(sent)
        assert hub.metric("otelcol_receiver_refused_spans", receiver="otlp") == 0
        assert edge.terminate() == 0
        assert hub.terminate() == 0
    finally:
        hub.kill()


class _Http1Server:
    """Answers every connection like an HTTP/1.1 server that does not know gRPC."""

    def __init__(self, port: int):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection, contextlib.suppress(OSError):
                connection.settimeout(2)
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


def test_an_upstream_answering_http1_keeps_the_data_queued_until_a_grpc_server_takes_its_place(agents, tmp_path):
    port = free_port()
    wrong = _Http1Server(port)
    config = traces_config(tmp_path / "agent.yaml", {"otlp": grpc_exporter(f"127.0.0.1:{port}")})
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
    sent = send_spans("http", agent.http_port, 300, batch=100)
    wait_until(lambda: "does not speak HTTP/2" in agent.health()[1]["exporters"]["otlp"].get("problem", ""),
               timeout=15, message="the exporter naming the problem")
    assert "HTTP/1.1 400" in agent.health()[1]["exporters"]["otlp"]["problem"]
    wrong.stop()
    upstream = GrpcUpstream(port).start()
    try:
        wait_until(lambda: upstream.span_ids() >= sent, timeout=30, interval=0.25, message="every span upstream")
        assert upstream.span_ids() == sent and len(upstream.spans()) == len(sent)
        assert agent.metric("edgeagent_deadletter_items") == 0
        assert agent.terminate() == 0
    finally:
        upstream.stop()


async def _export_to_hub(port: int, request: ExportTraceServiceRequest, sink: _DeadLetters, retry: RetryConfig,
                         **config) -> tuple[int, int]:
    """Export one request of 8 items to a hub's gRPC receiver through an export chain: (sent, refused)."""
    exporter = OtlpGrpcExporter("otlp", OtlpGrpcConfig(endpoint=f"127.0.0.1:{port}", tls={"insecure": True}, **config))
    chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=10, retry=retry)
    await exporter.start()
    try:
        delivery = await chain.export([(request.SerializeToString(), 8)], sink)
        return delivery.sent, delivery.refused_items
    finally:
        await exporter.shutdown()


@pytest.mark.parametrize("compression", ["gzip", "zstd", "snappy", "none"])
def test_a_message_over_our_own_receivers_limit_once_decompressed_is_split_not_dead_lettered(
        upstream, tmp_path, compression):
    """Our receiver must refuse it as grpc-go does ("received message after decompression larger than
    max"), so that a sender, ours or otelcol's, knows a smaller one gets through: agent to agent with
    gzip (the default), a batch over the hub's max_recv_msg_size_mib was dead-lettered whole."""
    hub_grpc = free_port()
    hub = _hub(tmp_path, upstream, {"endpoint": f"127.0.0.1:{hub_grpc}", "max_recv_msg_size_mib": 1})
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(8):  # 1.6 MB of spans of 200 kB, each a few hundred bytes compressed
        scope.spans.add(name="x" * 200_000, span_id=(index + 1).to_bytes(8, "big"), trace_id=bytes(range(1, 17)))
    sink = _DeadLetters()

    try:
        sent = asyncio.run(_export_to_hub(hub_grpc, request, sink, RetryConfig(
            initial_interval=0.1, max_interval=0.1, max_elapsed_time=5), compression=compression))
        assert sent == (8, 0), [description["reason"] for _, description in sink.kept]
        wait_until(lambda: len(upstream.span_ids()) == 8, timeout=20, message="the 8 spans upstream")
        assert hub.terminate() == 0
    finally:
        hub.kill()


def test_a_batch_more_than_the_hubs_queue_holds_even_empty_is_split_not_dead_lettered(upstream, tmp_path):
    """A hub whose queue is sized in items refuses a request it could never hold (RESOURCE_EXHAUSTED;
    413 over HTTP, which is split): its halves fit, so the edge sends them instead."""
    hub_grpc = free_port()
    hub = _hub(tmp_path, upstream, {"endpoint": f"127.0.0.1:{hub_grpc}"},
               sending_queue={"num_consumers": 1, "sizer": "items", "queue_size": 5})
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(8):
        scope.spans.add(name="op", span_id=(index + 1).to_bytes(8, "big"), trace_id=bytes(range(1, 17)))
    sink = _DeadLetters()

    try:
        sent = asyncio.run(_export_to_hub(hub_grpc, request, sink, RetryConfig(
            initial_interval=0.1, max_interval=0.5, max_elapsed_time=20)))
        assert sent == (8, 0), [description["reason"] for _, description in sink.kept]
        wait_until(lambda: len(upstream.span_ids()) == 8, timeout=20, message="the 8 spans upstream")
        assert hub.terminate() == 0
    finally:
        hub.kill()
