"""otlphttp's `encoding` (otelcol's otlphttp key): OTLP/JSON bodies as `application/json` with hex
ids and integer enums, and the upstream's partial success read (a 2xx answer that does not decode
refused as otelcol refuses it), against a server on loopback."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from edgeagent.errors import PermanentError
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.signals import Signal
from tests.helpers.net import free_port

TRACE_ID, SPAN_ID = bytes(range(1, 17)), bytes(range(1, 9))


def _request() -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = TRACE_ID, SPAN_ID, "checkout"
    span.kind = trace_pb2.Span.SPAN_KIND_SERVER
    return request.SerializeToString()


async def _exchange(config: dict, answer: web.Response) -> tuple[web.Request, bytes, object]:
    """Send one traces request with `config` to a server answering `answer`; what it received, and the result."""
    seen: list[tuple[web.Request, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request, await request.read()))
        return answer

    app = web.Application()
    app.router.add_post("/v1/traces", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}", **config))
    await exporter.start()
    try:
        result = await exporter.send(Signal.TRACES, _request())
    finally:
        await exporter.shutdown()
        await runner.cleanup()
    return seen[0][0], seen[0][1], result


def test_json_encoding_sends_otlp_json_with_hex_ids_and_integer_enums():
    request, body, _ = asyncio.run(_exchange({"encoding": "json", "compression": "gzip"}, web.Response()))
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Encoding"] == "gzip"
    document = json.loads(body)  # aiohttp's server has undone the gzip
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (span["traceId"], span["spanId"]) == (TRACE_ID.hex(), SPAN_ID.hex())
    assert span["kind"] == 2 and span["name"] == "checkout"


def test_proto_encoding_is_the_default():
    request, body, _ = asyncio.run(_exchange({"compression": "none"}, web.Response()))
    assert request.headers["Content-Type"] == "application/x-protobuf"
    assert body == _request()


def test_a_json_partial_success_counts_the_rejected_spans():
    answer = web.json_response({"partialSuccess": {"rejectedSpans": "1", "errorMessage": "span too old"}})
    _, _, result = asyncio.run(_exchange({"encoding": "json"}, answer))
    assert (result.rejected, result.message) == (1, "span too old")


def test_an_unknown_encoding_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="'proto' or 'json'"):
        OtlpHttpConfig(endpoint="http://collector:4318", encoding="protobuf")


@pytest.mark.parametrize(("encoding", "content_type", "content", "shown"), [
    ("proto", "application/x-protobuf", b"\xff\xff\xff\xff", "4 bytes: ffffffff"),
    ("json", "application/json", b'{"partialSuccess": ', "19 bytes: 7b227061"),
])
def test_a_2xx_answer_that_does_not_decode_is_not_counted_as_delivered(encoding, content_type, content, shown):
    """otelcol (since #15389) refuses such an answer for good rather than send accepted data again:
    here it goes to the dead-letter store, named by its length and first bytes."""
    answer = web.Response(body=content, headers={"Content-Type": content_type})
    with pytest.raises(PermanentError, match=shown) as refused:
        asyncio.run(_exchange({"encoding": encoding, "compression": "none"}, answer))
    assert refused.value.status == 200


@pytest.mark.parametrize(("content_type", "content"), [
    ("application/x-protobuf", b""),  # no body: nothing to read, as otelcol
    ("application/json", b""),
    ("text/html", b"<html>welcome</html>"),  # a type otelcol does not read
    ("application/json; charset=utf-8", b"<html>"),  # otelcol matches the header exactly
])
def test_an_empty_2xx_answer_or_one_of_a_type_otelcol_does_not_read_is_delivered(content_type, content):
    answer = web.Response(body=content, headers={"Content-Type": content_type})
    _, _, result = asyncio.run(_exchange({"compression": "none"}, answer))
    assert result.rejected == 0


def test_a_queued_request_that_does_not_parse_is_dead_lettered_and_the_queue_drains_past_it(tmp_path):
    """With `encoding: json` the exporter parses each queued request to convert it. One damaged on
    disk (it decompresses, yet does not parse) raised DecodeError out of every attempt: the sender
    took it for a bug, gave the lease back, and leased the same head record again and again, so
    nothing behind it was ever delivered."""
    from edgeagent.configretry import RetryConfig
    from edgeagent.exporters.sender import Sender
    from edgeagent.queue import maintenance
    from edgeagent.queue.store import QueueStore
    from tests.exporters.test_sender_split import SenderHost, _until

    received: list[dict] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response()

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        store = QueueStore(str(tmp_path))
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        await store.put([queue], b"\x0f" + _request(), 1, Signal.TRACES)  # wire type 7: no parser takes it
        await store.put([queue], _request(), 1, Signal.TRACES)
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}",
                                                               encoding="json", compression="none"))
        await exporter.start()
        retry = RetryConfig(initial_interval=0.02, max_interval=0.05, randomization_factor=0)
        sender = Sender(exporter, queue, retry, 1, None, SenderHost(), timeout=5)
        await sender.start()
        try:
            await _until(lambda: received and queue.entries == 0, 5)
            letters = list(maintenance.each_dead_letter(store))
            assert len(letters) == 1 and letters[0].body() == b"\x0f" + _request()
        finally:
            await sender.shutdown()
            await exporter.shutdown()
            await store.close()
            await runner.cleanup()

    asyncio.run(scenario())
    assert len(received) == 1


def test_a_partial_success_with_only_a_warning_is_logged_as_otelcol_logs_it(caplog):
    """The OTLP spec lets a server warn in error_message while rejecting nothing; otelcol logs it."""
    from edgeagent.exporters.chain import ExportChain
    from tests.exporters.test_chain import Host

    answer = web.json_response({"partialSuccess": {"errorMessage": "attribute 'x' is deprecated"}})

    async def scenario() -> None:
        app = web.Application()
        async def handle(request: web.Request) -> web.Response:
            return answer

        app.router.add_post("/v1/traces", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}"))
        await exporter.start()
        try:
            delivery = await ExportChain(exporter, Signal.TRACES, Host(), timeout=5).export([(_request(), 1)])
            assert (delivery.sent, delivery.rejected) == (1, 0)
        finally:
            await exporter.shutdown()
            await runner.cleanup()

    with caplog.at_level("WARNING", logger="edgeagent.exporters.chain"):
        asyncio.run(scenario())
    [record] = [r for r in caplog.records if r.name == "edgeagent.exporters.chain"]
    assert record.upstream_message == "attribute 'x' is deprecated" and record.rejected == 0
