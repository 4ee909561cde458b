"""An answer whose head came but whose body did not (cut short, not what its Content-Encoding says,
broken chunked framing, or slower than the timeout) is judged by its status, as otelcol's exporter
judges it: a 2xx means the upstream took the data, so it is never sent again (an upstream that always
answers so would otherwise get the same request for ever, and the queue behind it would never move);
it is dead-lettered as a 2xx whose answer does not decode is. Other statuses keep their meaning."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.configretry import RetryConfig
from edgeagent.exporters.chain import Delivery, ExportChain
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.http1 import wire
from edgeagent.signals import Signal
from tests.exporters.test_chain import Host

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
BROKEN_2XX = {
    "cut short": _OK + b"Content-Length: 100\r\n\r\n\x0a\x00",
    "not the gzip it says": _OK + b"Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
    "broken chunks": _OK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "slower than the timeout": _OK + b"Content-Length: 2\r\n\r\n",
}
CLEAN_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class _DeadLetters:
    def __init__(self) -> None:
        self.kept: list[tuple[list[tuple[bytes, int]], dict]] = []

    async def dead_letter(self, refused: list[tuple[bytes, int]], description: dict) -> None:
        self.kept.append((refused, description))


def _request(spans: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        scope.spans.add(name="op", span_id=index.to_bytes(8, "big"), trace_id=bytes(16))
    return request.SerializeToString()


def _export(answers: list[bytes], sink: _DeadLetters) -> tuple[Delivery, int]:
    """One request through the chain (retry every 0.1 s) to a server giving `answers` in turn (the
    last one again after them), each on a connection it then closes; what became of it, and how
    many times it was sent."""
    attempts = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        block = await wire.read_head(reader)
        if block is not None:
            await reader.readexactly(int(wire.parse_head(block)[1]["Content-Length"]))
            attempts += 1
            writer.write(answers[min(attempts, len(answers)) - 1])
            await writer.drain()
            await asyncio.sleep(3)  # "slower than the timeout" never gets its body; the others are closed now
        writer.close()

    async def scenario() -> Delivery:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}", timeout=1,
                                                               compression="none", keepalive={"enabled": False}))
        chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=1,
                            retry=RetryConfig(initial_interval=0.1, max_interval=0.1, max_elapsed_time=4))
        await exporter.start()
        try:
            return await asyncio.wait_for(chain.export([(_request(3), 3)], sink), 15)
        finally:
            await exporter.shutdown()
            server.close()

    return asyncio.run(scenario()), attempts


@pytest.mark.parametrize("answer", BROKEN_2XX.values(), ids=BROKEN_2XX.keys())
def test_a_2xx_whose_body_breaks_off_is_not_sent_again_but_dead_lettered(answer):
    sink = _DeadLetters()
    delivery, attempts = _export([answer], sink)
    assert attempts == 1
    assert (delivery.sent, delivery.refused_items) == (0, 3)
    [(refused, description)] = sink.kept
    assert refused == [(_request(3), 3)] and description["status"] == 200


def test_a_400_whose_body_breaks_off_is_refused_for_its_status():
    sink = _DeadLetters()
    delivery, attempts = _export([b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\nbad"], sink)
    assert attempts == 1 and delivery.refused_items == 3
    assert sink.kept[0][1]["status"] == 400


def test_a_503_whose_body_breaks_off_is_retried_and_then_delivered():
    sink = _DeadLetters()
    delivery, attempts = _export([b"HTTP/1.1 503 Busy\r\nContent-Length: 100\r\n\r\nbusy", CLEAN_200], sink)
    assert attempts == 2 and delivery.sent == 3 and not sink.kept
