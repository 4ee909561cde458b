"""Exporter compression with otelcol's codec names, decoded by real servers on loopback.

The otlphttp exporter sends to `tests.helpers.upstream.Upstream`, which decodes each
Content-Encoding with its own decoder (zlib, gzip, zstandard, cramjam), independent of the
exporter's encoders.
"""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from edgeagent.exporters.otlp import OtlpGrpcConfig
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.signals import Signal

HTTP_CODECS = ["gzip", "zstd", "deflate", "zlib", "snappy", "lz4", "none"]


def _request(spans: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        scope.spans.add(name=f"checkout-{index % 7}", span_id=index.to_bytes(8, "big"), trace_id=bytes(16))
    return request.SerializeToString()


@pytest.mark.parametrize("compression", HTTP_CODECS)
def test_otlphttp_sends_each_otelcol_codec_in_a_form_the_upstream_decodes(upstream, compression):
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression=compression))
    body = _request(500)

    async def send() -> None:
        await exporter.start()
        try:
            await exporter.send(Signal.TRACES, body)
        finally:
            await exporter.shutdown()

    asyncio.run(send())
    (received,) = upstream.received("traces")
    assert len(upstream.spans()) == 500
    headers = {name.lower(): value for name, value in received.headers.items()}
    (call,) = upstream.calls
    if compression == "none":
        assert "content-encoding" not in headers and call.wire_bytes == len(body)
    else:
        assert headers["content-encoding"] == compression
        assert call.wire_bytes < len(body) / 2, (call.wire_bytes, len(body))


@pytest.mark.parametrize("compression", ["zstd", "snappy"])
def test_grpc_codecs_beyond_gzip_are_sent_as_configured_without_a_warning(compression):
    # the gRPC client is ours: it sends zstd and snappy as such (tests/exporters/test_grpc_client.py)
    assert OtlpGrpcConfig(endpoint="127.0.0.1:4317", compression=compression).config_warnings() == []


def test_an_unknown_codec_is_a_config_error_naming_the_choices():
    with pytest.raises(ValueError, match="lz4"):
        OtlpHttpConfig(endpoint="http://127.0.0.1:4318", compression="brotli")
