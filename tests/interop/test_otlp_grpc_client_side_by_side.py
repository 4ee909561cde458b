"""otelcol's otlp (gRPC) exporter where edgeagent's honours a key differently on purpose
(docs/otelcol-compatibility.md, "Honoured differently"): the row stays true while this passes.

- `endpoint: http://host:port` with `tls::insecure` unset: otelcol 0.165 dials TLS (configgrpc
  drops the scheme; the tls block decides), so a plaintext upstream never gets a call from it;
  edgeagent speaks plaintext there and delivers.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from edgeagent.signals import Signal
from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.net import free_port
from tests.helpers.otlp_post import post
from tests.interop.test_otlphttp_client_side_by_side import _request

pytestmark = pytest.mark.e2e


def test_an_http_scheme_is_tls_to_otelcol_and_plaintext_to_edgeagent(otelcol):
    upstream = GrpcUpstream(free_port()).start()
    try:
        port = free_port()
        peer = otelcol({"receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
                        "exporters": {"otlp_grpc": {"endpoint": f"http://127.0.0.1:{upstream.port}",
                                                    "retry_on_failure": {"enabled": False}}},
                        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}}}})
        assert post(port, _request())[0] == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "tls: first record does not look like a TLS handshake" not in peer.log():
            time.sleep(0.1)
        assert "tls: first record does not look like a TLS handshake" in peer.log()
        assert upstream.attempts == 0

        async def ours() -> None:
            exporter = OtlpGrpcExporter("otlp", OtlpGrpcConfig(endpoint=f"http://127.0.0.1:{upstream.port}"))
            await exporter.start()
            try:
                await exporter.send(Signal.TRACES, _request().SerializeToString())
            finally:
                await exporter.shutdown()

        asyncio.run(ours())
        assert upstream.attempts == 1
    finally:
        upstream.stop()
