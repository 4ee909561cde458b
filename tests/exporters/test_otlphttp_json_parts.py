"""otlphttp with `encoding: json` sends a record larger than JSON_PART_BYTES in parts cut on its
bytes, each at most that size: converting a record of 60 MiB to JSON whole took several times its
size in memory. The parts keep the lease's guarantees: a part refused for now is tried again, and
the parts the upstream took are not sent again.

Real queue store, sender and otlphttp exporter, and a scripted upstream on loopback that reads
OTLP/JSON as the agent's own receiver does."""

from __future__ import annotations

import asyncio

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.configretry import RetryConfig
from edgeagent.exporters.otlphttp import JSON_PART_BYTES, OtlpHttpConfig, OtlpHttpExporter
from edgeagent.exporters.sender import Sender
from edgeagent.receivers.codec import decode
from edgeagent.signals import Signal
from tests.exporters.test_sender_split import FAST, SenderHost, SplitUpstream, _open, _until

SPAN_BYTES = 1 << 20  # a span carrying one attribute of 1 MiB


class JsonUpstream(SplitUpstream):
    """SplitUpstream reading OTLP/JSON; notes the protobuf size of every request it takes."""

    def __init__(self, refusals: int):
        super().__init__(refusals)
        self.sizes: list[int] = []

    async def start(self) -> None:
        app = web.Application(client_max_size=256 << 20)  # aiohttp's default answers 413 above 1 MiB
        app.router.add_post("/v1/traces", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        message = decode(Signal.TRACES, await request.read(), "application/json").view()
        spans = [span for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans]
        if any(span.name == "b" for span in spans) and self.refused < self.refusals:
            self.refused += 1
            return web.Response(status=503, text="busy")
        self.sizes.append(message.ByteSize())
        for span in spans:
            self.accepted[span.span_id] += 1
            self.order.append(span.name)
        return web.Response(status=200, content_type="application/json", body=b"{}")


def _large_record(names: str) -> tuple[bytes, int]:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index, name in enumerate(names):
        span = scope.spans.add(name=name, span_id=index.to_bytes(8, "big"), trace_id=bytes(range(16)))
        span.attributes.add(key="payload").value.string_value = "x" * SPAN_BYTES
    return request.SerializeToString(), len(names)


async def _send(upstream: JsonUpstream, directory: str, record: tuple[bytes, int], retry: RetryConfig) -> int:
    """Queue `record` and run a sender without batch settings (one lease: the whole record) until it is sent."""
    await upstream.start()
    store = _open(directory)
    try:
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        await store.put([queue], *record, Signal.TRACES)
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, encoding="json"))
        await exporter.start()
        sender = Sender(exporter, queue, retry, 1, None, SenderHost(), timeout=30)
        await sender.start()
        try:
            await _until(lambda: queue.entries == 0, 60)
        finally:
            await sender.shutdown()
            await exporter.shutdown()
        return queue.entries
    finally:
        await store.close()
        await upstream.stop()


def test_a_record_larger_than_the_json_part_size_goes_out_in_parts_of_at_most_that_size(tmp_path):
    names = "a" * (3 * JSON_PART_BYTES // SPAN_BYTES)  # three parts' worth
    upstream = JsonUpstream(refusals=0)
    left = asyncio.run(_send(upstream, str(tmp_path / "queue"), _large_record(names), RetryConfig(**FAST)))
    assert left == 0
    assert len(upstream.sizes) >= 3
    assert max(upstream.sizes) <= JSON_PART_BYTES + 1024, upstream.sizes  # the resource and scope, once each
    assert dict(upstream.accepted) == {index.to_bytes(8, "big"): 1 for index in range(len(names))}


def test_a_part_refused_for_now_is_sent_again_and_parts_taken_are_not(tmp_path):
    # the "b" spans come after a part's worth of "a" spans: that part is taken, the next refused
    names = "a" * (JSON_PART_BYTES // SPAN_BYTES) + "bbb" + "c" * 4
    upstream = JsonUpstream(refusals=6)  # more than one round of retries: the lease goes back to the queue
    retry = RetryConfig(max_elapsed_time=0.1, **FAST)
    left = asyncio.run(_send(upstream, str(tmp_path / "queue"), _large_record(names), retry))
    assert left == 0 and upstream.refused == 6
    assert dict(upstream.accepted) == {index.to_bytes(8, "big"): 1 for index in range(len(names))}
    assert "".join(upstream.order) == names
