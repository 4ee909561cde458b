"""A load balancer's HTTP/1 health check on the gRPC port.

HAProxy in TCP mode checks a gRPC backend with `option httpchk GET /health`: an HTTP/1.0 request
on the gRPC port itself (the deployment guide's OTLP gRPC backend on 4317). grpc-go answers it
with nothing a checker can read, so every backend would be marked down. The gRPC server holds its
HTTP/2 preface until the peer's first bytes (a gRPC client sends its own preface first, unasked);
when those are such a request, `answer` gives the whole HTTP/1.0 answer and the connection closes.
Any other HTTP/1 request goes on to HTTP/2, which refuses it as before.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

PATH = b"/health"
_METHODS = (b"GET", b"HEAD", b"OPTIONS")


def health_body(healthy: bool) -> str:
    """The body of a /health answer, as the health_check extension words its status."""
    return json.dumps({"status": "Server available" if healthy else "Server not available"})


def answer(first: bytes, healthy: Callable[[], bool]) -> bytes | None:
    """The HTTP/1.0 answer to `first` (the peer's first bytes) when it is a health check request, else None."""
    line, newline, _ = first.partition(b"\n")
    parts = line.rstrip(b"\r").split(b" ")
    if not newline or len(parts) != 3 or parts[0] not in _METHODS or not parts[2].startswith(b"HTTP/1."):
        return None
    if parts[1].partition(b"?")[0] != PATH:
        return None
    ok = healthy()
    body = health_body(ok).encode()
    head = (f"HTTP/1.0 {'200 OK' if ok else '503 Service Unavailable'}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if parts[0] == b"HEAD" else head + body


def answered(transport: asyncio.Transport | None, first: bytes, healthy: Callable[[], bool]) -> bool:
    """Answer `first` on `transport` and close it when it is a health check request; False otherwise."""
    probe = answer(first, healthy)
    if probe is None or transport is None:
        return False
    transport.write(probe)
    transport.close()
    return True
