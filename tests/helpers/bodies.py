"""Serialized OTLP request bodies for tests of what parsing them costs."""

from __future__ import annotations

import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_KEYS = ("http.request.method", "http.route", "url.path", "http.response.status_code", "server.address",
         "client.address", "user_agent.original", "network.protocol.version")


def ordinary_traces(spans: int = 512) -> bytes:
    """Spans as an SDK sends them: random ids, a name, times and eight short string attributes."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        span = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name=f"GET /api/v1/orders/{index}",
                               start_time_unix_nano=1_700_000_000_000_000_000 + index,
                               end_time_unix_nano=1_700_000_000_100_000_000 + index)
        for key in _KEYS:
            span.attributes.add(key=key).value.string_value = f"value-{index}"
    return request.SerializeToString()
