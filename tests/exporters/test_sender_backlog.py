"""A backlog drains as otelcol 0.165 would send it, never as one giant request.

Without a size trigger (the batch processor's `send_batch_size: 0` or `timeout: 0`, which starts
no timer; the exporter batcher's `min_size: 0`, which flushes each request as it comes) each
queued request goes out on its own, split by the max size, never merged with the next. With a
size trigger, what is merged stays under a byte bound, whatever the item counts allow.

Real queue store, real sender and otlphttp exporter, and an upstream on loopback that records
the spans and bytes of each request."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.configretry import RetryConfig
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.exporters.sender import MERGED_REQUEST_BYTES, BatchSettings, Sender
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal
from tests.exporters.test_sender_split import SenderHost


class Recording:
    """OTLP/HTTP on loopback: accepts everything and notes (spans, bytes) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, int]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Recording:
        app = web.Application(client_max_size=256 << 20)
        app.router.add_post("/v1/traces", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        message = ExportTraceServiceRequest.FromString(body)
        spans = sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
        self.requests.append((spans, len(body)))
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")


def _request(spans: int, name_bytes: int = 8) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        scope.spans.add(name=f"{index:0{name_bytes}d}", span_id=(index + 1).to_bytes(8, "big"), trace_id=bytes(16))
    return request.SerializeToString()


async def _drain(tmp_path, batch: BatchSettings, records: int, spans: int,
                 name_bytes: int = 8) -> list[tuple[int, int]]:
    """Queue a backlog first, then start the sender on it; what the upstream got, request by request."""
    store = QueueStore(str(tmp_path / "queue"))
    store.open()
    store.start()
    try:
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        body = _request(spans, name_bytes)
        for _ in range(records):
            await store.put([queue], body, spans, Signal.TRACES)
        async with Recording() as upstream:
            exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression="none"))
            await exporter.start()
            sender = Sender(exporter, queue, RetryConfig(), 1, batch, SenderHost(), timeout=30)
            await sender.start()
            try:
                for _ in range(3000):
                    if sum(count for count, _ in upstream.requests) >= records * spans:
                        break
                    await asyncio.sleep(0.01)
            finally:
                await sender.shutdown()
                await exporter.shutdown()
            return upstream.requests
    finally:
        await store.close()


@pytest.mark.parametrize("batch", [
    BatchSettings(0.2, 0, 0),  # batch processor send_batch_size: 0, exporter batcher min_size: 0
    BatchSettings(0.0, 100, 0),  # batch processor timeout: 0 (no timer: every request passes through)
], ids=["no_size_trigger", "no_timer"])
def test_without_a_size_trigger_each_queued_request_goes_out_alone(tmp_path, batch):
    requests = asyncio.run(_drain(tmp_path, batch, records=40, spans=2))
    assert [spans for spans, _ in requests] == [2] * 40


def test_without_a_size_trigger_a_queued_request_is_split_by_the_max_size_never_merged(tmp_path):
    requests = asyncio.run(_drain(tmp_path, BatchSettings(0.2, 0, 3), records=10, spans=5))
    assert [spans for spans, _ in requests] == [3, 2] * 10


def test_a_merged_request_stays_under_the_byte_bound_whatever_the_item_counts_allow(tmp_path):
    record_bytes = MERGED_REQUEST_BYTES // 5
    spans = 100
    requests = asyncio.run(_drain(tmp_path, BatchSettings(0.01, 1 << 20, 0), records=30, spans=spans,
                                  name_bytes=record_bytes // spans))
    assert sum(count for count, _ in requests) == 30 * spans
    assert max(size for _, size in requests) <= MERGED_REQUEST_BYTES
    assert len(requests) < 30  # still merged, only bounded


def test_a_backlog_larger_than_one_request_goes_out_without_waiting_the_batch_timeout_each_time(tmp_path):
    """A request full by bytes is as full as it gets: each lease of a backlog past the byte bound
    waited the whole batch timeout for items it could never take (a 300,000-span backlog took
    30 s instead of 4)."""
    record_bytes = MERGED_REQUEST_BYTES // 5
    spans = 100
    started = asyncio.run(_timed_drain(tmp_path, BatchSettings(1.0, 1 << 20, 0), records=30, spans=spans,
                                       name_bytes=record_bytes // spans))
    requests, seconds = started
    assert sum(count for count, _ in requests) == 30 * spans and len(requests) >= 6
    assert seconds < 3.0, f"{len(requests)} requests took {seconds:.1f} s: each waited the 1 s batch timeout"


async def _timed_drain(tmp_path, batch: BatchSettings, **kwargs) -> tuple[list[tuple[int, int]], float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    requests = await _drain(tmp_path, batch, **kwargs)
    return requests, loop.time() - started
