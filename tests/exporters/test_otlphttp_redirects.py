"""otlphttp's 307/308 to another host, against real upstreams on loopback (`127.0.0.1` redirecting to
`localhost`: two hosts by name).

otelcol's confighttp client sets the configured `headers` and the auth extension's on every request
the transport sends, each hop of a redirect included (its headerRoundTripper and the auth
RoundTripper wrap the transport); Go's redirect only drops what the first request carried, which
for otelcol's exporter is the Basic auth of credentials in the endpoint URL. Dropping the configured
Authorization made an upstream that moved its intake to another host answer 401 to every request:
all of it dead-lettered, where otelcol delivers it.
"""

from __future__ import annotations

import asyncio

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.extensions.bearertokenauth import BearerTokenAuth, BearerTokenAuthConfig
from edgeagent.signals import Signal
from tests.helpers.net import free_port
from tests.helpers.upstream import Upstream


class Host:
    def __init__(self, **extensions):
        self.extensions = extensions


def _request() -> bytes:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="op", span_id=bytes(8), trace_id=bytes(16))
    return request.SerializeToString()


def _send(config: OtlpHttpConfig, host: Host | None = None) -> None:
    async def scenario() -> None:
        for extension in (host.extensions.values() if host else ()):
            await extension.start()
        exporter = OtlpHttpExporter("otlphttp", config, host)
        await exporter.start()
        try:
            await asyncio.wait_for(exporter.send(Signal.TRACES, _request()), 10)
        finally:
            await exporter.shutdown()

    asyncio.run(scenario())


def _upstreams() -> tuple[Upstream, Upstream]:
    target = Upstream(free_port()).start()
    first = Upstream(free_port()).start()
    first.redirect = (307, f"http://localhost:{target.port}/v1/traces")
    return first, target


def test_configured_headers_and_the_auth_extensions_go_with_a_redirect_to_another_host():
    first, target = _upstreams()
    try:
        _send(OtlpHttpConfig(endpoint=first.url, compression="none",
                             headers={"Authorization": "Bearer from-headers", "X-Tenant": "edge"}))
        token = BearerTokenAuth("bearertokenauth", BearerTokenAuthConfig(token="from-auth"))
        _send(OtlpHttpConfig(endpoint=first.url, compression="none", auth={"authenticator": "bearertokenauth"}),
              Host(bearertokenauth=token))
        headers = [received.headers for received in target.received("traces")]
        assert [h.get("Authorization") for h in headers] == ["Bearer from-headers", "Bearer from-auth"]
        assert [h.get("X-Tenant") for h in headers] == ["edge", None]
    finally:
        first.stop()
        target.stop()


def test_credentials_of_the_endpoint_url_stay_with_its_host_as_go_keeps_them():
    first, target = _upstreams()
    try:
        _send(OtlpHttpConfig(endpoint=first.url.replace("http://", "http://edge:s3cr3t@"), compression="none"))
        [received] = target.received("traces")
        assert "Authorization" not in received.headers
        assert [call.status for call in first.calls] == [307]
    finally:
        first.stop()
        target.stop()
