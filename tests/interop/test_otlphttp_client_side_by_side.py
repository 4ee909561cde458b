"""otelcol's otlphttp exporter where edgeagent's was found to differ, each against the same real
upstreams on loopback: what otelcol delivers, edgeagent's exporter delivers the same way
(tests/exporters/test_otlphttp_redirects.py and test_otlphttp_tls_auth.py hold edgeagent's side).

- A 307 to another host: the configured `headers` (an Authorization too) reach the new host.
- `tls: {insecure: true, ca_file: ...}` on an https:// endpoint: the CA verifies the upstream and
  the client certificate is presented (configtls keeps the block when a CA is given).
- A 200 whose head is larger than `read_buffer_size`: taken as delivered, sent once.
"""

from __future__ import annotations

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.net import free_port
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

pytestmark = pytest.mark.e2e


def _request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="op", span_id=b"\1" * 8, trace_id=b"\1" * 16)
    return request


def _forward(otelcol, exporter: dict) -> None:
    """otelcol with an OTLP/HTTP receiver and `exporter` as its otlphttp exporter; one span through it."""
    port = free_port()
    otelcol({"receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
             "exporters": {"otlphttp": {"retry_on_failure": {"enabled": False}, "compression": "none", **exporter}},
             "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}}}})
    status, _ = post(port, _request())
    assert status == 200


def _wait_for(upstream: Upstream) -> list:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not upstream.received("traces"):
        time.sleep(0.1)
    return upstream.received("traces")


def test_otelcol_sends_the_configured_headers_after_a_redirect_to_another_host(otelcol):
    target = Upstream(free_port()).start()
    first = Upstream(free_port()).start()
    first.redirect = (307, f"http://localhost:{target.port}/v1/traces")
    try:
        _forward(otelcol, {"endpoint": first.url, "headers": {"Authorization": "Bearer from-headers"}})
        [received] = _wait_for(target)
        assert received.headers.get("Authorization") == "Bearer from-headers"
    finally:
        first.stop()
        target.stop()


def test_otelcol_keeps_the_tls_block_beside_insecure_when_a_ca_is_given(otelcol, certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(certs.ca_file)
    upstream = Upstream(free_port(), ssl_context=context).start()
    try:
        _forward(otelcol, {"endpoint": upstream.url, "tls": {
            "insecure": True, "ca_file": certs.ca_file, "cert_file": certs.client_cert, "key_file": certs.client_key}})
        assert len(_wait_for(upstream)) == 1
    finally:
        upstream.stop()


class _LargeHead(BaseHTTPRequestHandler):
    """Answers every POST 200 with 24 KiB of Set-Cookie headers (a gateway's), counting the POSTs."""

    posts: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the handler's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append(self.path)
        self.send_response(200)
        for index in range(6):
            self.send_header("Set-Cookie", f"part{index}={'v' * 4000}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_otelcol_takes_a_200_with_a_head_larger_than_its_read_buffer(otelcol):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LargeHead)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _forward(otelcol, {"endpoint": f"http://127.0.0.1:{server.server_address[1]}", "read_buffer_size": 4096,
                           "retry_on_failure": {"enabled": True, "initial_interval": "100ms", "max_interval": "100ms",
                                                "max_elapsed_time": "3s"}})
        time.sleep(2)  # time for retries, had the answer been an error
        assert _LargeHead.posts == ["/v1/traces"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
