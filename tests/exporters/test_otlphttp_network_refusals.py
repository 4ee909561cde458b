"""Answers that come from the network between us and the upstream, never from the upstream: a
proxy wanting credentials (407) and a captive portal wanting a login (511, RFC 6585). The upstream
never saw the data, so it stays queued and goes out once the network lets it through; it is not
dead-lettered as a refusal of the data. (Over an https:// endpoint the proxy's 407 already ended
the CONNECT as an unreachable upstream; through a proxy that forwards http:// it was taken for
the upstream's verdict and every request was dead-lettered.)"""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.configretry import RetryConfig
from edgeagent.errors import RetryableError
from edgeagent.exporters.chain import ExportChain
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.http1 import wire
from edgeagent.signals import Signal
from tests.exporters.test_chain import Host
from tests.exporters.test_otlphttp_broken_answers import _DeadLetters

ANSWERS = {
    "proxy wants credentials": (407, b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic "
                                     b"realm=\"corp\"\r\nContent-Length: 0\r\n\r\n"),
    "captive portal": (511, b"HTTP/1.1 511 Network Authentication Required\r\nContent-Type: text/html\r\n"
                            b"Content-Length: 31\r\n\r\n<a href=\"/login\">log in</a>    "),
}


def _request() -> bytes:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="op", span_id=bytes(8), trace_id=bytes(16))
    return request.SerializeToString()


@pytest.mark.parametrize("status, answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_refusal_by_the_network_keeps_the_data_queued_and_is_not_dead_lettered(status, answer):
    """Through a forwarding proxy (`proxy_url`, http:// endpoint), which answers for the upstream."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (block := await wire.read_head(reader)) is not None:
            await reader.readexactly(int(wire.parse_head(block)[1]["Content-Length"]))
            writer.write(answer)
        writer.close()

    sink, host = _DeadLetters(), Host()

    async def scenario() -> RetryableError:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint="http://collector.example:4318",
                                                               proxy_url=f"http://127.0.0.1:{port}"))
        chain = ExportChain(exporter, Signal.TRACES, host, timeout=5,
                            retry=RetryConfig(initial_interval=0.1, max_interval=0.1, max_elapsed_time=0.5))
        await exporter.start()
        try:
            with pytest.raises(RetryableError) as caught:
                await asyncio.wait_for(chain.export([(_request(), 1)], sink), 10)
            return caught.value
        finally:
            await exporter.shutdown()
            server.close()

    error = asyncio.run(scenario())
    assert not sink.kept
    assert error.connection and str(status) in str(error)
    assert str(status) in (host.problems["otlphttp"] or "")
