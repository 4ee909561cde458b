"""One OTLP/HTTP protobuf request, as a client sends it: the answer's status and headers."""

from __future__ import annotations

import http.client
from email.message import Message

from google.protobuf.message import Message as Request


def post(port: int, request: Request | bytes, path: str = "/v1/traces") -> tuple[int, Message]:
    body = request if isinstance(request, bytes) else request.SerializeToString()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        response.read()
        return response.status, response.headers
    finally:
        connection.close()
