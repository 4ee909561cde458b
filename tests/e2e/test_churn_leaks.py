"""A gateway runs for months: what each request, connection or handshake leaves behind must go with
it, not wait for the cycle collector (which a serving agent runs only every 50,000 objects that
outlive their request: lean.py). Measured from outside as the agent's anonymous memory (RssAnon,
what its memory limiter reads), before and after a bounded churn."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import struct
import time
from pathlib import Path

import h2.config
import h2.connection
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers import grpc_raw
from tests.helpers.configs import queue_on_disk_config
from tests.helpers.net import free_port

MIB = 1 << 20


def _rss_anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


def _request(spans: int) -> bytes:
    """About 100 bytes a span, hardly compressible: a decoder's window as large as the body."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for _ in range(spans):
        span = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="op")
        span.attributes.add(key="k").value.string_value = os.urandom(24).hex()
    return request.SerializeToString()


def _agent(agents, tmp_path: Path, upstream):
    config = queue_on_disk_config(tmp_path / "agent.yaml", tmp_path / "queue")
    return agents(["run", "--config", config], env={"UPSTREAM": upstream.url})


def test_zstd_requests_leave_no_decoder_behind(agents, tmp_path, upstream):
    # each decoder of a zstd body (its window: about the body's size) stayed in a reference cycle
    # with the body's reader until the cycle collector ran: 200 requests of 300 kB held 110 MiB
    agent = _agent(agents, tmp_path, upstream)
    # 300 kB that compress to almost nothing: the window is the frame's content size all the same,
    # and a few spans cost the agent little to parse and store
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(10):
        span = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="op")
        span.attributes.add(key="k").value.string_value = chr(ord("a") + index) * 30_000
    body = zstandard.ZstdCompressor().compress(request.SerializeToString())
    connection = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=30)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "zstd"}

    def send(times: int) -> None:
        for _ in range(times):
            connection.request("POST", "/v1/traces", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200

    try:
        send(10)
        before = _rss_anon(agent.process.pid)
        send(150)
        http_growth = _rss_anon(agent.process.pid) - before
    finally:
        connection.close()
    before = _rss_anon(agent.process.pid)
    for _ in range(150):  # the same over gRPC (otelcol's otlp exporter with compression: zstd)
        assert grpc_raw.call(agent.grpc_port, body, encoding="zstd")[0] == 0
    grpc_growth = _rss_anon(agent.process.pid) - before
    left = f"150 zstd requests left {http_growth / MIB:.0f} MiB over HTTP, {grpc_growth / MIB:.0f} MiB over gRPC"
    assert max(http_growth, grpc_growth) < 30 * MIB, left


TLS_RECEIVER = """
receivers:
  otlp:
    protocols:
      grpc:
        tls:
          cert_file: ${env:CERT}
          key_file: ${env:KEY}
      http:
        tls:
          cert_file: ${env:CERT}
          key_file: ${env:KEY}
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:%d
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], exporters: [otlphttp]}
"""


def _refused_handshakes(port: int, protocol: str, times: int) -> None:
    """Clients that do not trust the agent's certificate: each ends its handshake with an alert."""
    context = ssl.create_default_context()  # the system's CAs, not the test CA
    context.set_alpn_protocols([protocol])
    for _ in range(times):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            try:
                context.wrap_socket(raw, server_hostname="127.0.0.1").close()
            except ssl.SSLCertVerificationError:
                pass
            else:
                raise AssertionError("the handshake should have failed")


def test_failed_tls_handshakes_leave_nothing_behind(agents, tmp_path, certs):
    # a TLS connection whose handshake failed (a client with the wrong CA, retrying for months)
    # stayed in a reference cycle through the handshake error's traceback, with asyncio's 256 kB
    # read buffer, until the cycle collector ran: 200 such clients held 40 MiB on each port
    config = tmp_path / "tls.yaml"
    config.write_text(TLS_RECEIVER % free_port())
    agent = agents(["run", "--config", str(config)], env={"CERT": certs.server_cert, "KEY": certs.server_key})
    growth = {}
    for name, port, protocol in (("HTTP", agent.http_port, "http/1.1"), ("gRPC", agent.grpc_port, "h2")):
        _refused_handshakes(port, protocol, 10)
        before = _rss_anon(agent.process.pid)
        _refused_handshakes(port, protocol, 200)
        growth[name] = _rss_anon(agent.process.pid) - before
    left = ", ".join(f"{value / MIB:.0f} MiB on {name}" for name, value in growth.items())
    assert max(growth.values()) < 20 * MIB, f"200 failed handshakes left {left}"


def _idle_tls_clients(port: int, protocol: str, ca_file: str, count: int) -> list[ssl.SSLSocket]:
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols([protocol])
    return [context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                server_hostname="127.0.0.1") for _ in range(count)]


def test_idle_tls_connections_hold_little_memory(agents, tmp_path, certs):
    # asyncio gave each TLS connection a read buffer of 256 kB, written at its start: 200 idle TLS
    # clients (a hub's senders, or a slowloris) held 55 MiB on each port, about 285 kB each
    config = tmp_path / "tls.yaml"
    config.write_text(TLS_RECEIVER % free_port())
    agent = agents(["run", "--config", str(config)], env={"CERT": certs.server_cert, "KEY": certs.server_key})
    growth = {}
    for name, port, protocol in (("HTTP", agent.http_port, "http/1.1"), ("gRPC", agent.grpc_port, "h2")):
        clients = _idle_tls_clients(port, protocol, certs.ca_file, 5)
        before = _rss_anon(agent.process.pid)
        clients += _idle_tls_clients(port, protocol, certs.ca_file, 200)
        time.sleep(0.2)  # the last handshakes' ends read by the agent
        growth[name] = _rss_anon(agent.process.pid) - before
        for client in clients:
            client.close()
    held = ", ".join(f"{value / MIB:.0f} MiB on {name}" for name, value in growth.items())
    assert max(growth.values()) < 16 * MIB, f"200 idle TLS connections held {held}"


def test_grpc_connections_leave_nothing_behind(agents, tmp_path, upstream):
    # h2's connection state refers to itself (its table of frame handlers), so each closed gRPC
    # connection stayed, with its buffers and header tables, until the cycle collector ran
    agent = _agent(agents, tmp_path, upstream)
    message = _request(1)
    for _ in range(20):
        assert grpc_raw.call(agent.grpc_port, message)[0] == 0
    before = _rss_anon(agent.process.pid)
    for _ in range(600):  # one call each, as clients that connect for every export
        assert grpc_raw.call(agent.grpc_port, message)[0] == 0
    growth = _rss_anon(agent.process.pid) - before
    assert growth < 4 * MIB, f"600 gRPC connections left {growth / MIB:.1f} MiB"


def test_uploads_cut_off_by_a_reset_leave_nothing_behind(agents, tmp_path, upstream):
    # a client whose link drops mid-upload (a reset): the error, kept by the connection's reader,
    # held through its traceback the part of the body already read, until the cycle collector ran:
    # 40 uploads cut after 2 MB held 80 MiB
    agent = _agent(agents, tmp_path, upstream)
    part = os.urandom(2 << 20)

    def cut(times: int) -> None:
        for _ in range(times):
            with socket.create_connection(("127.0.0.1", agent.http_port), timeout=10) as client:
                client.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: edge\r\nContent-Type: application/x-protobuf\r\n"
                               b"Content-Length: %d\r\n\r\n" % (2 * len(part)) + part)
                time.sleep(0.02)  # read by the agent
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    cut(3)
    before = _rss_anon(agent.process.pid)
    cut(40)
    time.sleep(0.2)
    growth = _rss_anon(agent.process.pid) - before
    assert growth < 20 * MIB, f"40 uploads cut off left {growth / MIB:.0f} MiB"


def _grpc_call_cut_off(port: int, part: bytes) -> None:
    """A call whose message declares twice `part`, cut by a reset once `part` is sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", grpc_raw.TRACE_METHOD),
                                         (":authority", "127.0.0.1"), ("content-type", "application/grpc"),
                                         ("te", "trailers")])
        data = struct.pack(">BI", 0, 2 * len(part)) + part
        sent = 0
        deadline = time.monotonic() + 5
        while sent < len(data) and time.monotonic() < deadline:
            size = min(connection.local_flow_control_window(stream), connection.max_outbound_frame_size,
                       len(data) - sent)
            if size > 0:
                connection.send_data(stream, data[sent:sent + size])
                sent += size
            client.sendall(connection.data_to_send())
            if size <= 0:  # wait for the agent's WINDOW_UPDATE
                connection.receive_data(client.recv(65536))
        assert sent == len(data)
        time.sleep(0.02)  # read by the agent
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_grpc_calls_cut_off_by_a_reset_leave_nothing_behind(agents, tmp_path, upstream):
    # the connection kept its calls when it was lost, and each call's task (cancelled) kept the
    # message parts received: a cycle through the connection until the cycle collector ran
    agent = _agent(agents, tmp_path, upstream)
    part = os.urandom(2 << 20)
    for _ in range(3):
        _grpc_call_cut_off(agent.grpc_port, part)
    before = _rss_anon(agent.process.pid)
    for _ in range(30):
        _grpc_call_cut_off(agent.grpc_port, part)
    time.sleep(0.2)
    growth = _rss_anon(agent.process.pid) - before
    assert growth < 20 * MIB, f"30 gRPC calls cut off left {growth / MIB:.0f} MiB"
