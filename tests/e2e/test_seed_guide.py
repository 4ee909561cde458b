"""The deployment guide's collector configs run as a user runs them: the real agent, real SDK clients, a
real upstream on loopback in place of the platform.

The configs are the seed files verbatim; `--set` only moves what points off this machine or into
the system: listeners to free loopback ports, the queue directory into the test's sandbox, the
upstream endpoints to loopback, certificate paths to the test CA's, the batch timer to 500 ms (what
is checked does not depend on it), and enables `health_check` where a config has none (the test
waits on it). Partial blocks are merged onto the complete config they extend with a second
`--config`, as otelcol merges them.
"""

from __future__ import annotations

import csv
import io
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import pytest

from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_logs, send_metrics, send_spans
from tests.helpers.upstream import Upstream

SEEDS = os.path.join(os.path.dirname(__file__), "..", "testdata", "seeds")
API_KEY = "tfk-3f9a61c2.tfs-5be0d7a4e8"
ENV = {
    "TELEMETRYFLOW_WORKSPACE_ID": "550e8400-e29b-41d4-a716-446655440000",
    "TELEMETRYFLOW_TENANT_ID": "660e8400-e29b-41d4-a716-446655440001",
    "TELEMETRYFLOW_API_KEY": API_KEY,
    "REGION": "us-east-1",
}
IDS = {"telemetryflow.workspace.id": ENV["TELEMETRYFLOW_WORKSPACE_ID"],
       "telemetryflow.tenant.id": ENV["TELEMETRYFLOW_TENANT_ID"]}
FAST_BATCH = ["--set", "processors::batch::timeout=500ms"]


def _seed(name: str) -> str:
    return os.path.join(SEEDS, name)


def _queue(tmp_path, name: str = "queue") -> list[str]:
    return ["--set", f"extensions::file_storage::directory={tmp_path / name}"]


def _attributes(item) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in item.attributes}


def _carries(item, expected: dict[str, str]) -> bool:
    attributes = _attributes(item)
    return all(attributes.get(key) == value for key, value in expected.items())


def _headers(received) -> dict[str, str]:
    return {key.lower(): value for key, value in received.headers.items()}


def test_hub_and_spoke_agent_sends_through_the_collector_to_the_platform(agents, upstream, tmp_path):
    collector = agents(["run", "--config", _seed("tfo-hub-collector.yaml"), *_queue(tmp_path), *FAST_BATCH,
                        "--set", "service::extensions=[file_storage, health_check]"],
                       env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url})
    # the agent's `http://tfo-otel-collector:4318` is the collector above
    agent = agents(["run", "--config", _seed("tfo-hub-agent.yaml"), *FAST_BATCH,
                    "--set", f"exporters::otlphttp::endpoint=http://127.0.0.1:{collector.http_port}",
                    "--set", "service::extensions=[health_check]"],
                   env={"STATE_DIRECTORY": str(tmp_path / "agent-state")})

    send_metrics("http", agent.http_port, points=3)
    send_metrics("grpc", agent.grpc_port, points=4)

    wait_until(lambda: len(upstream.data_points()) >= 7, timeout=30, interval=0.3, message="metrics upstream")
    assert len(upstream.data_points()) == 7
    assert all(_carries(point, IDS) for point in upstream.data_points())
    for received in upstream.requests:
        headers = _headers(received)
        assert headers["content-encoding"] == "gzip"
        assert headers["x-workspace-id"] == ENV["TELEMETRYFLOW_WORKSPACE_ID"]
        assert headers["x-tenant-id"] == ENV["TELEMETRYFLOW_TENANT_ID"]
    assert agent.metric("otelcol_exporter_sent_metric_points", exporter="otlphttp") == 7
    assert collector.metric("otelcol_exporter_sent_metric_points", exporter="otlphttp/telemetryflow") == 7
    assert agent.terminate() == 0 and collector.terminate() == 0


def test_direct_config_authenticates_every_signal_and_serves_health_and_metrics(agents, upstream, tmp_path):
    agent = agents(["run", "--config", _seed("tfo-direct.yaml"), *_queue(tmp_path), *FAST_BATCH],
                   env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url})

    span_ids = send_spans("http", agent.http_port, 50) | send_spans("grpc", agent.grpc_port, 50)
    send_metrics("http", agent.http_port, points=3)
    send_logs("grpc", agent.grpc_port, count=4)

    wait_until(lambda: upstream.span_ids() >= span_ids and len(upstream.data_points()) >= 3
               and len(upstream.log_records()) >= 4, timeout=30, interval=0.3, message="every signal upstream")
    for received in upstream.requests:
        assert _headers(received)["authorization"] == f"Bearer {API_KEY}"
    assert all(_carries(item, IDS) for item in [*upstream.spans(), *upstream.data_points(), *upstream.log_records()])

    # "Health checks passing": health_check on its endpoint (0.0.0.0:13133 in the guide)
    for path in ("/", "/health", "/health/live", "/health/ready"):
        assert agent.health(path)[0] == 200, path
    # what the guide's troubleshooting greps for, and every series its alert rules read
    names = {key.partition("{")[0] for key in agent.metrics()}
    assert {"otelcol_exporter_sent_metric_points", "otelcol_exporter_send_failed_metric_points",
            "otelcol_exporter_queue_size", "otelcol_exporter_queue_capacity"} <= names
    assert agent.metric("otelcol_exporter_sent_spans", exporter="otlphttp/telemetryflow") == 100
    assert agent.metric("otelcol_exporter_queue_capacity", exporter="otlphttp/telemetryflow",
                        data_type="traces") == 5000
    assert agent.terminate() == 0


def test_regional_routing_sends_every_batch_to_the_regional_and_the_central_endpoint(agents, upstream, tmp_path):
    central = Upstream(free_port()).start()
    try:
        agent = agents(["run", "--config", _seed("tfo-direct.yaml"), "--config", _seed("tfo-multi-region-routing.yaml"),
                        *_queue(tmp_path), *FAST_BATCH,
                        "--set", f"exporters::otlphttp/central::endpoint={central.url}"],
                       env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url})
        send_metrics("http", agent.http_port, points=5)

        # two exporters in one pipeline: fan-out, as in otelcol (the guide's "backup" gets every batch too)
        wait_until(lambda: len(upstream.data_points()) >= 5 and len(central.data_points()) >= 5,
                   timeout=30, interval=0.3, message="metrics at both endpoints")
        for server in (upstream, central):
            assert all(_carries(point, {**IDS, "deployment.region": "us-east-1"}) for point in server.data_points())
            assert all(_headers(received)["x-region"] == "us-east-1" for received in server.requests)
        assert agent.terminate() == 0
    finally:
        central.stop()


def test_regional_routing_keeps_sending_to_central_while_the_region_is_down_and_catches_up(agents, upstream,
                                                                                            tmp_path):
    """The guide calls the central endpoint the "backup (if regional fails)": with the region down the
    central endpoint keeps getting everything, and the region gets what it missed once it is back."""
    central = Upstream(free_port()).start()
    upstream.refuse(reset=True)
    try:
        agent = agents(["run", "--config", _seed("tfo-direct.yaml"), "--config", _seed("tfo-multi-region-routing.yaml"),
                        *_queue(tmp_path), *FAST_BATCH,
                        "--set", f"exporters::otlphttp/central::endpoint={central.url}"],
                       env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url})
        send_metrics("http", agent.http_port, points=4)
        wait_until(lambda: len(central.data_points()) >= 4 and upstream.attempts >= 1, timeout=30, interval=0.3,
                   message="central served while the region refuses")
        assert upstream.data_points() == []

        upstream.listen()
        wait_until(lambda: len(upstream.data_points()) >= 4, timeout=60, interval=0.3, message="the region catches up")
        assert len(upstream.data_points()) == 4 and len(central.data_points()) == 4
        assert agent.terminate() == 0
    finally:
        central.stop()


def _mtls_upstream(certs) -> Upstream:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certs.ca_file)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    return Upstream(free_port(), ssl_context=context, path_prefix="/api").start()


def test_tls_block_requires_client_certificates_and_presents_its_own_upstream(agents, certs, tmp_path):
    platform = _mtls_upstream(certs)
    tls_keys = {"receivers::otlp::protocols::grpc::tls::cert_file": certs.server_cert,
                "receivers::otlp::protocols::grpc::tls::key_file": certs.server_key,
                "receivers::otlp::protocols::grpc::tls::client_ca_file": certs.ca_file,
                "exporters::otlphttp/telemetryflow::endpoint": platform.url,
                "exporters::otlphttp/telemetryflow::tls::ca_file": certs.ca_file,
                "exporters::otlphttp/telemetryflow::tls::cert_file": certs.client_cert,
                "exporters::otlphttp/telemetryflow::tls::key_file": certs.client_key}
    try:
        agent = agents(["run", "--config", _seed("tfo-direct.yaml"), "--config", _seed("tfo-tls.yaml"),
                        *_queue(tmp_path), *FAST_BATCH,
                        *[arg for key, value in tls_keys.items() for arg in ("--set", f"{key}={value}")]],
                       env={**ENV, "TELEMETRYFLOW_ENDPOINT": "http://unused.invalid"})
        with open(certs.ca_file, "rb") as ca, open(certs.client_key, "rb") as key, \
                open(certs.client_cert, "rb") as cert:
            root, client = ca.read(), (key.read(), cert.read())
        sent = send_spans("grpc", agent.grpc_port, 20, credentials=grpc.ssl_channel_credentials(root, *client))
        wait_until(lambda: platform.span_ids() >= sent, timeout=30, interval=0.3, message="spans through mTLS")

        # RequireAndVerifyClientCert: a client without a certificate gets nothing in
        with pytest.raises(grpc.RpcError):
            _grpc_export_without_client_certificate(agent.grpc_port, root)
        assert agent.terminate() == 0
    finally:
        platform.stop()


def _grpc_export_without_client_certificate(port: int, root: bytes) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    with grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root)) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                     request_serializer=ExportTraceServiceRequest.SerializeToString,
                                     response_deserializer=lambda data: data)
        export(ExportTraceServiceRequest(), timeout=5)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _http10(port: int, request: bytes) -> bytes:
    """What HAProxy's `option httpchk` sends in TCP mode (an HTTP/1.0 request) and the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    return answer


def test_load_balancer_health_checks_on_the_otlp_ports_pass(agents, upstream, tmp_path):
    """The guide's HAProxy checks each collector with `option httpchk GET /health` on 4318 (HTTP mode)
    and on 4317 (TCP mode: an HTTP/1.0 request on the gRPC port), and expects 200: anything else would
    mark every collector down."""
    agent = agents(["run", "--config", _seed("tfo-direct.yaml"), *_queue(tmp_path), *FAST_BATCH],
                   env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url})
    assert _get(f"http://127.0.0.1:{agent.http_port}/health") == 200
    assert _http10(agent.http_port, b"GET /health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert _http10(agent.grpc_port, b"GET /health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")
    # and the gRPC port still serves gRPC
    sent = send_spans("grpc", agent.grpc_port, 10, must_deliver=True)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=30, interval=0.3, message="spans over gRPC")
    assert agent.terminate() == 0


def _haproxy_config(agent, frontends: dict[int, int], stats: str) -> str:
    """The guide's HAProxy config with its binds and collectors moved to loopback, and a stats socket."""
    with open(os.path.join(SEEDS, "tfo-haproxy.cfg"), encoding="utf-8") as source:
        text = source.read()
    for port, target in ((4317, agent.grpc_port), (4318, agent.http_port)):
        text = text.replace(f"bind *:{port}", f"bind 127.0.0.1:{frontends[port]}")
        for n in (1, 2, 3):
            text = text.replace(f"collector{n}:{port}", f"127.0.0.1:{target}")
    # `maxconn 50000` needs two descriptors a connection: where the limit is lower (and may not be
    # raised), HAProxy refuses to start, so the copy asks for what fits
    descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if descriptors != resource.RLIM_INFINITY and descriptors < 2 * 50000 + 100:
        text = text.replace("maxconn 50000", f"maxconn {(descriptors - 100) // 2}")
    return text.replace("global\n", f"global\n    stats socket {stats} level admin\n", 1)


def _checks(stats: str) -> dict[tuple[str, str], str]:
    """(backend, server) -> HAProxy's last health check status (L7OK when it passed)."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(stats)
        connection.sendall(b"show stat\n")
        text = b"".join(iter(lambda: connection.recv(65536), b"")).decode()
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {(row["pxname"], row["svname"]): row["check_status"] for row in rows
            if row["svname"].startswith("collector")}


def test_the_guides_haproxy_finds_every_collector_healthy_and_balances_otlp_to_it(agents, upstream, tmp_path):
    """The guide's load balancer in front of edgeagent collectors: HAProxy's own checks (`option httpchk
    GET /health`, in HTTP mode on 4318 and in TCP mode on 4317) pass, and OTLP goes through both frontends."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed (apt-get install -y haproxy)")
    agent = agents(["run", "--config", _seed("tfo-direct.yaml"), *_queue(tmp_path), *FAST_BATCH],
                   env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url})
    frontends, stats = {4317: free_port(), 4318: free_port()}, str(tmp_path / "haproxy.sock")
    config = tmp_path / "haproxy.cfg"
    config.write_text(_haproxy_config(agent, frontends, stats))
    with open(tmp_path / "haproxy.log", "wb") as log:
        balancer = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=log)
    try:
        # "INI": not checked yet (HAProxy spreads the first checks over `inter 5s`)
        wait_until(lambda: os.path.exists(stats) and len(_checks(stats)) == 6
                   and not {"", "INI"} & set(_checks(stats).values()),
                   timeout=20, interval=0.3, message="HAProxy's first health checks")
        assert set(_checks(stats).values()) == {"L7OK"}, _checks(stats)

        sent = send_spans("grpc", frontends[4317], 20, must_deliver=True)
        sent |= send_spans("http", frontends[4318], 20, must_deliver=True)
        wait_until(lambda: upstream.span_ids() >= sent, timeout=30, interval=0.3, message="spans through HAProxy")
    finally:
        balancer.kill()
        balancer.wait(10)
    assert agent.terminate() == 0


# The troubleshooting fixes, each applied to the running config it fixes, as an operator applies them:
# the fix written into the config and a reload (SIGHUP), no restart.
FIXES = [
    ("tfo-troubleshooting-memory-limiter.yaml", "tfo-hub-collector.yaml"),
    ("tfo-troubleshooting-batch-size.yaml", "tfo-hub-collector.yaml"),
    ("tfo-troubleshooting-batch-timeout.yaml", "tfo-direct.yaml"),
    ("tfo-troubleshooting-exporter-consumers.yaml", "tfo-hub-agent.yaml"),
]


@pytest.mark.parametrize("fix,base", FIXES)
def test_a_troubleshooting_fix_applies_to_the_running_agent_on_reload(fix, base, agents, upstream, tmp_path):
    site = tmp_path / "fix.yaml"
    site.write_text("{}\n")
    if base == "tfo-hub-agent.yaml":  # no file_storage; its exporter is the collector's `http://tfo-otel-collector:4318`
        moved = ["--set", "service::extensions=[health_check]",
                 "--set", f"exporters::otlphttp::endpoint={upstream.url}"]
    else:
        moved = [*_queue(tmp_path), "--set", "service::extensions=[health_check, file_storage]"]
    # the batch-timeout fix is the batch timer itself: the others get the fast one
    timer = [] if fix == "tfo-troubleshooting-batch-timeout.yaml" else FAST_BATCH
    agent = agents(["run", "--config", _seed(base), "--config", str(site), *moved, *timer],
                   env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url, "STATE_DIRECTORY": str(tmp_path / "state")})
    with open(_seed(fix), encoding="utf-8") as snippet:
        site.write_text(snippet.read())
    agent.process.send_signal(signal.SIGHUP)
    wait_until(lambda: agent.metric("edgeagent_config_reloads", result="applied") == 1, timeout=20, interval=0.2,
               message=f"the reload:\n{agent.log()}")

    sent = time.monotonic()
    send_metrics("http", agent.http_port, points=2)
    wait_until(lambda: len(upstream.data_points()) >= 2, timeout=20, interval=0.2, message="metrics after the reload")
    assert len(upstream.data_points()) == 2
    if not timer:  # the fix's 5 s timer, not the config's 10 s
        assert time.monotonic() - sent < 9
    assert agent.terminate() == 0
