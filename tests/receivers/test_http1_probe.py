"""http1_probe: which first bytes on the gRPC port are a load balancer's health check, and the answer."""

from __future__ import annotations

import pytest

from edgeagent.receivers import http1_probe

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize("first", [
    b"GET /health HTTP/1.0\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: collector1\r\n\r\n",
    b"OPTIONS /health HTTP/1.0\r\n\r\n",
    b"GET /health?probe=1 HTTP/1.0\n\n",
])
def test_a_health_check_request_is_answered_by_the_agents_health(first):
    assert http1_probe.answer(first, lambda: True).startswith(b"HTTP/1.0 200 OK\r\n")
    unhealthy = http1_probe.answer(first, lambda: False)
    assert unhealthy.startswith(b"HTTP/1.0 503 ") and unhealthy.endswith(b'{"status": "Server not available"}')


def test_head_gets_the_headers_only():
    assert http1_probe.answer(b"HEAD /health HTTP/1.0\r\n\r\n", lambda: True).endswith(b"\r\n\r\n")


@pytest.mark.parametrize("first", [
    PREFACE,  # a gRPC client
    b"POST /v1/traces HTTP/1.1\r\n",  # OTLP/HTTP sent to the gRPC port: refused by HTTP/2, as before
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /healthz HTTP/1.0\r\n\r\n",
    b"GET /health",  # no whole request line
    b"GET /health SPDY/3\r\n",
])
def test_anything_else_goes_on_to_http2(first):
    assert http1_probe.answer(first, lambda: True) is None
