"""A request body over the upstream's limit is split, whatever status says so: otelcol's OTLP/HTTP
receiver answers a body over its max_request_body_size (20 MiB by default) with 400 and Go's
"http: request body too large", not 413. Taken as any other 400, a merged batch larger than the
limit was dead-lettered whole, although its halves would have been taken."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.configretry import RetryConfig
from edgeagent.exporters.chain import Delivery, ExportChain
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.signals import Signal
from tests.exporters.test_chain import Host
from tests.exporters.test_otlphttp_broken_answers import _DeadLetters
from tests.helpers.net import free_port

LIMIT = 1 << 20
SPAN_BYTES = 200_000
SIZES = [SPAN_BYTES] * 6 + [2 * LIMIT] + [SPAN_BYTES] * 3  # 1.8 MB without the one span over the limit


def _request(sizes: list[int]) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index, size in enumerate(sizes):
        scope.spans.add(name="x" * size, span_id=index.to_bytes(8, "big"), trace_id=bytes(range(16)))
    return request.SerializeToString()


async def _export(endpoint: str, compression: str, sink: _DeadLetters) -> Delivery:
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=endpoint, compression=compression))
    chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=10,
                        retry=RetryConfig(initial_interval=0.1, max_interval=0.1, max_elapsed_time=5))
    await exporter.start()
    try:
        return await asyncio.wait_for(chain.export([(_request(SIZES), len(SIZES))], sink), 30)
    finally:
        await exporter.shutdown()


def _assert_split_down_to_the_one_span_over_the_limit(delivery: Delivery, sink: _DeadLetters) -> None:
    assert (delivery.sent, delivery.refused_items) == (len(SIZES) - 1, 1)
    [([(body, items)], description)] = sink.kept
    [span] = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans
    assert items == 1 and len(span.name) == 2 * LIMIT
    assert description["status"] == 400 and "too large" in description["reason"]


async def _export_to(handle) -> tuple[Delivery, _DeadLetters]:
    """Export the request to a loopback aiohttp server answering with `handle`."""
    app = web.Application(client_max_size=64 * LIMIT)
    app.router.add_post("/v1/traces", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sink = _DeadLetters()
    try:
        return await _export(f"http://127.0.0.1:{port}", "none", sink), sink
    finally:
        await runner.cleanup()


def test_a_400_saying_the_body_is_too_large_splits_as_a_413():
    """The answer otelcol's receiver gives, from a loopback server that takes bodies up to LIMIT."""
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if len(body) > LIMIT:
            status = status_pb2.Status(code=3, message="http: request body too large")
            return web.Response(status=400, body=status.SerializeToString(), content_type="application/x-protobuf")
        return web.Response(body=b"", content_type="application/x-protobuf")

    _assert_split_down_to_the_one_span_over_the_limit(*asyncio.run(_export_to(handle)))


def test_a_400_for_another_reason_is_not_split():
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        status = status_pb2.Status(code=3, message="unknown field in the request")
        return web.Response(status=400, body=status.SerializeToString(), content_type="application/x-protobuf")

    delivery, sink = asyncio.run(_export_to(handle))
    assert delivery.refused_items == len(SIZES) and len(sink.kept) == 1


@pytest.mark.e2e
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_otelcols_receiver_takes_the_halves_of_a_body_over_its_limit(otelcol, compression):
    port = free_port()
    otelcol({"receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}",
                                                           "max_request_body_size": LIMIT}}}},
             "exporters": {"nop": {}},
             "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["nop"]}}}})
    sink = _DeadLetters()
    delivery = asyncio.run(_export(f"http://127.0.0.1:{port}", compression, sink))
    _assert_split_down_to_the_one_span_over_the_limit(delivery, sink)



@pytest.mark.parametrize("status", [429, 503])
def test_a_retryable_status_saying_the_request_is_over_a_size_limit_splits_instead_of_retrying(status):
    """Grafana Cloud's OTLP gateway answers a request over its backend's gRPC limit with 429 and the
    backend's words: retried as a throttle, the same bytes went out again until the retries ran out,
    and again after every lease, never delivered."""
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if len(body) > LIMIT:
            return web.Response(status=status, text=f"grpc: received message after decompression larger than max "
                                                    f"({len(body)} vs. {LIMIT})")
        return web.Response(body=b"", content_type="application/x-protobuf")

    delivery, sink = asyncio.run(_export_to(handle))
    assert (delivery.sent, delivery.refused_items) == (len(SIZES) - 1, 1)
    [([(_, items)], description)] = sink.kept
    assert items == 1 and description["status"] == status and "larger than max" in description["reason"]


def test_a_429_for_another_reason_is_retried_not_split():
    answers = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        answers.append(429 if not answers else 200)
        if answers[-1] == 429:
            return web.Response(status=429, text="ingestion rate limit exceeded")
        return web.Response(body=b"", content_type="application/x-protobuf")

    delivery, sink = asyncio.run(_export_to(handle))
    assert answers == [429, 200] and delivery.sent == len(SIZES) and not sink.kept
