"""A lease sent as several requests: the parts the upstream accepted are not sent again when a
later part fails, whether the retries run out or the agent stops and starts again in between.

Real queue store, real sender and otlphttp exporter, and a scripted upstream on loopback that
accepts the requests without a span named "b" and answers 503 to those with one, a bounded
number of times, then 200."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

from edgeagent.configretry import RetryConfig
from edgeagent.errors import RetryableError
from edgeagent.exporters.chain import ExportChain
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.exporters.sender import BatchSettings, Sender
from edgeagent.queue import deadletter, maintenance, record
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal
from tests.exporters.test_chain import Host

FAST = {"initial_interval": 0.02, "max_interval": 0.05, "randomization_factor": 0}
HALVES = BatchSettings(0.01, 0, 2)  # a lease goes out in requests of two spans


class SenderHost(Host):
    def __init__(self) -> None:
        super().__init__()
        self.failures: list[str] = []

    def component_stopped(self, path: str, message: str) -> None:
        self.failures.append(message)


class SplitUpstream:
    """Accepts a request unless it holds a span named "b" (503 `refusals` times) or "x" (400)."""

    def __init__(self, refusals: int, max_items: int = 0):
        self.refusals = refusals
        self.max_items = max_items  # more spans than this in one request: 413
        self.site: list[int] = []  # per span taken: how many "site" attributes it carried
        self.accepted: Counter[bytes] = Counter()  # span id -> times the upstream took it
        self.order: list[str] = []  # span names in the order they were taken
        self.refused = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest.FromString(await request.read())
        spans = [span for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans]
        if self.max_items and len(spans) > self.max_items:
            return web.Response(status=413, text="too large")
        if any(span.name == "x" for span in spans):
            return web.Response(status=400, text="refused for good")
        if any(span.name == "b" for span in spans) and self.refused < self.refusals:
            self.refused += 1
            return web.Response(status=503, text="busy")
        for span in spans:
            self.accepted[span.span_id] += 1
            self.order.append(span.name)
            self.site.append(sum(attribute.key == "site" for attribute in span.attributes))
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")


def _record(names: str, first_id: int) -> tuple[bytes, int]:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index, name in enumerate(names):
        scope.spans.add(name=name, span_id=(first_id + index).to_bytes(8, "big"), trace_id=bytes(16))
    return request.SerializeToString(), len(names)


async def _until(condition, timeout: float) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def _run_sender(store: QueueStore, url: str, retry: RetryConfig, host: SenderHost, until,
                      batch: BatchSettings | None = HALVES) -> None:
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=url, compression="none"))
    await exporter.start()
    sender = Sender(exporter, queue, retry, 1, batch, host, timeout=5)
    await sender.start()
    try:
        await _until(until, 10)
    finally:
        await sender.shutdown()
        await exporter.shutdown()


def _open(directory: str) -> QueueStore:
    store = QueueStore(directory)
    store.open()
    store.start()
    return store


def test_parts_already_delivered_are_not_sent_again_when_a_later_part_runs_out_of_retries(tmp_path):
    async def scenario() -> tuple[SplitUpstream, int]:
        upstream = SplitUpstream(refusals=12)  # several rounds of retries that run out
        await upstream.start()
        store = _open(str(tmp_path / "queue"))
        try:
            queue = store.queue("otlphttp/traces", Signal.TRACES)
            for names, first in (("aabb", 0), ("cc", 10)):
                body, items = _record(names, first)
                await store.put([queue], body, items, Signal.TRACES)
            retry = RetryConfig(max_elapsed_time=0.1, **FAST)
            await _run_sender(store, upstream.url, retry, SenderHost(), lambda: queue.entries == 0)
            return upstream, queue.entries
        finally:
            await store.close()
            await upstream.stop()

    upstream, left = asyncio.run(scenario())
    assert upstream.refused == 12
    assert left == 0
    assert dict(upstream.accepted) == {i.to_bytes(8, "big"): 1 for i in (0, 1, 2, 3, 10, 11)}
    assert upstream.order == ["a", "a", "b", "b", "c", "c"]  # the rest of the lease still goes first


def test_parts_already_delivered_are_not_sent_again_after_a_clean_restart(tmp_path):
    directory = str(tmp_path / "queue")

    async def scenario() -> tuple[SplitUpstream, list[int]]:
        upstream = SplitUpstream(refusals=1 << 30)  # "b" is refused until the restart
        await upstream.start()
        try:
            store = _open(directory)
            try:
                queue = store.queue("otlphttp/traces", Signal.TRACES)
                for names, first in (("aabb", 0), ("cc", 10)):
                    body, items = _record(names, first)
                    await store.put([queue], body, items, Signal.TRACES)
                retry = RetryConfig(max_elapsed_time=0, **FAST)  # retries forever: ended by the shutdown
                await _run_sender(store, upstream.url, retry, SenderHost(), lambda: upstream.refused >= 2)
            finally:
                await store.close()
            upstream.refusals = 0
            store = _open(directory)
            try:
                queue = store.queue("otlphttp/traces", Signal.TRACES)
                stored = [queue.entries, queue.items]
                await _run_sender(store, upstream.url, RetryConfig(**FAST), SenderHost(), lambda: queue.entries == 0)
            finally:
                await store.close()
            return upstream, stored
        finally:
            await upstream.stop()

    upstream, stored = asyncio.run(scenario())
    assert stored == [2, 4]  # the undelivered half of the first record, and the second record
    assert dict(upstream.accepted) == {i.to_bytes(8, "big"): 1 for i in (0, 1, 2, 3, 10, 11)}
    assert upstream.order == ["a", "a", "b", "b", "c", "c"]


def _stored(store: QueueStore) -> list[tuple[int, int, bytes]]:
    """(key, items, batch key) of every record of the queue."""
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    with store.reading(queue) as txn:
        return [(int.from_bytes(key, "big"), header.items, header.batch_key)
                for key, value in txn.cursor() for header in [record.decode_header(value)]]


def test_records_of_a_lease_halved_on_413_give_back_only_the_undelivered_halves_in_their_place(tmp_path):
    directory = str(tmp_path / "queue")
    site = KeyValueList(values=[KeyValue(key="site", value=AnyValue(string_value="x"))]).SerializeToString()
    whole = BatchSettings(0.01, 1 << 20, 0)  # one lease takes every record of a batch key: one request

    async def scenario() -> tuple[SplitUpstream, list[tuple[int, int, bytes]]]:
        upstream = SplitUpstream(refusals=1 << 30, max_items=2)
        await upstream.start()
        try:
            store = _open(directory)
            try:
                queue = store.queue("otlphttp/traces", Signal.TRACES)
                for names, first, key in (("aa", 0, b"k1"), ("bb", 10, b"k1"), ("cc", 20, b"k1"), ("dd", 30, b"k2")):
                    body, items = _record(names, first)
                    await store.put([queue], body, items, Signal.TRACES, batch_key=key, attributes=site)
                retry = RetryConfig(max_elapsed_time=0, **FAST)
                await _run_sender(store, upstream.url, retry, SenderHost(), lambda: upstream.refused >= 2, whole)
            finally:
                await store.close()
            upstream.refusals = 0
            store = _open(directory)
            try:
                queue = store.queue("otlphttp/traces", Signal.TRACES)
                stored = _stored(store)
                await _run_sender(store, upstream.url, RetryConfig(**FAST), SenderHost(), lambda: queue.entries == 0,
                                  whole)
            finally:
                await store.close()
            return upstream, stored
        finally:
            await upstream.stop()

    upstream, stored = asyncio.run(scenario())
    # the first three records (one lease) became one record in the first one's place, its batch key kept
    assert stored == [(1, 4, b"k1"), (4, 2, b"k2")]
    assert dict(upstream.accepted) == {i.to_bytes(8, "big"): 1 for i in (0, 1, 10, 11, 20, 21, 30, 31)}
    assert upstream.order == ["a", "a", "b", "b", "c", "c", "d", "d"]
    assert upstream.site == [1] * 8  # the record's attributes, added once


def test_a_failed_export_names_what_is_left_only_when_a_request_before_it_was_delivered():
    parts = {names: _record(names, 0) for names in ("xx", "aa", "bb")}

    async def scenario(order: list[str]) -> list[tuple[bytes, int]] | None:
        upstream = SplitUpstream(refusals=1 << 30)
        await upstream.start()
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression="none"))
        await exporter.start()
        try:
            chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=5)  # one attempt per request
            try:
                await chain.export([parts[names] for names in order])
            except RetryableError as exc:
                return exc.unsent
            raise AssertionError("the export did not fail")
        finally:
            await exporter.shutdown()
            await upstream.stop()

    # the refused request stays with the rest, to be refused (and dead-lettered) with it next time
    assert asyncio.run(scenario(["xx", "aa", "bb", "aa"])) == [parts["xx"], parts["bb"], parts["aa"]]
    assert asyncio.run(scenario(["xx", "bb", "aa"])) is None  # nothing delivered: all of it is kept


def test_a_queue_purged_once_its_sender_stopped_is_empty_even_with_a_split_batch_given_back(tmp_path):
    """A stopping sender gives back the undelivered rest of a split batch in a commit of its own:
    once shutdown returned, that commit is done and its records are no longer leased, so a purge
    (as `edgeagent queue purge` runs it, with the senders stopped) takes them too."""
    from edgeagent.queue import maintenance

    async def scenario() -> tuple[int, int]:
        upstream = SplitUpstream(refusals=1 << 30)
        await upstream.start()
        store = _open(str(tmp_path / "queue"))
        try:
            queue = store.queue("otlphttp/traces", Signal.TRACES)
            body, items = _record("aabb", 0)
            await store.put([queue], body, items, Signal.TRACES)
            retry = RetryConfig(max_elapsed_time=0, **FAST)  # retries forever: ended by the shutdown
            await _run_sender(store, upstream.url, retry, SenderHost(), lambda: upstream.refused >= 2)
            purged = await maintenance.purge(store, queue)
            return purged, queue.entries
        finally:
            await store.close()
            await upstream.stop()

    purged, left = asyncio.run(scenario())
    assert (purged, left) == (1, 0)


def test_the_refused_part_of_a_split_lease_is_kept_compressed_in_the_dead_letter_store(tmp_path):
    # a refused part took its place in the dead-letter store uncompressed: several times the disk of
    # the queue records it came from, within the same disk budget the queues need (with drop_oldest,
    # queued data was evicted to make room for it)
    async def scenario() -> tuple[int, int, int]:
        upstream = SplitUpstream(refusals=0)
        await upstream.start()
        store = _open(str(tmp_path / "queue"))
        try:
            queue = store.queue("otlphttp/traces", Signal.TRACES)
            request = ExportTraceServiceRequest()
            scope = request.resource_spans.add().scope_spans.add()
            for index, name in enumerate("axcd"):
                span = scope.spans.add(name=name, span_id=index.to_bytes(8, "big"), trace_id=bytes(16))
                span.attributes.add(key="note").value.string_value = "compressible " * 4000
            await store.put([queue], request.SerializeToString(), 4, Signal.TRACES)
            await _run_sender(store, upstream.url, RetryConfig(**FAST), SenderHost(), lambda: queue.entries == 0)
            letters = list(maintenance.each_dead_letter(store))
            assert len(letters) == 1
            refused = ExportTraceServiceRequest.FromString(letters[0].body())
            return len(letters[0].value), len(letters[0].body()), len(refused.resource_spans[0].scope_spans[0].spans)
        finally:
            await store.close()
            await upstream.stop()

    stored, raw, spans = asyncio.run(scenario())
    assert spans == 2  # "a" and "x", the half the upstream refused
    assert stored < raw // 10, (stored, raw)


class UnparsableTooLarge(SplitUpstream):
    """Answers 413 to a request that is not protobuf (a proxy's size limit, or a damaged record)."""

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            ExportTraceServiceRequest.FromString(await request.read())
        except DecodeError:
            return web.Response(status=413, text="too large")
        return await super()._handle(request)


def test_a_413_on_a_record_that_is_not_protobuf_dead_letters_it_as_unsplittable_and_delivery_goes_on(tmp_path):
    """Halving it raised DecodeError out of the chain: the lease was released and tried again for ever,
    holding the records behind it."""
    host = SenderHost()

    async def scenario() -> tuple[list[deadletter.DeadLetter], int, UnparsableTooLarge]:
        upstream = UnparsableTooLarge(refusals=0)
        await upstream.start()
        store = _open(str(tmp_path / "queue"))
        try:
            queue = store.queue("otlphttp/traces", Signal.TRACES)
            await store.put([queue], b"\xff\xff\xff\xff", 2, Signal.TRACES)
            body, items = _record("ab", 0)
            await store.put([queue], body, items, Signal.TRACES)
            await _run_sender(store, upstream.url, RetryConfig(**FAST), host, lambda: queue.entries == 0, None)
            return list(maintenance.each_dead_letter(store)), queue.entries, upstream
        finally:
            await store.close()
            await upstream.stop()

    letters, left, upstream = asyncio.run(scenario())
    assert left == 0
    assert upstream.order == ["a", "b"]
    [letter] = letters
    assert letter.body() == b"\xff\xff\xff\xff"
    assert letter.description["status"] == 413
    assert "cannot be split" in letter.description["reason"], letter.description
    assert host.counts[("edgeagent_deadletter_items", "otlphttp", "traces")] == 2
    assert host.counts[("edgeagent_exporter_unexpected_errors", "otlphttp")] == 0


class SlowUpstream(SplitUpstream):
    """Takes each request as it arrives and answers it `delay` seconds later (a slow link's upstream)."""

    def __init__(self, delay: float):
        super().__init__(refusals=0)
        self.delay = delay

    async def _handle(self, request: web.Request) -> web.Response:
        answer = await super()._handle(request)
        await asyncio.sleep(self.delay)
        return answer


def test_a_stop_sends_no_further_part_of_a_split_lease_and_gives_back_only_what_is_left(tmp_path):
    """A stop let the chain go on sending the lease's next parts for the whole grace period; the one
    under way when it ended was cancelled, which gave back the whole lease: the parts delivered
    before the stop (on a slow link, most of a lease cut in many) went out again after the restart."""
    directory = str(tmp_path / "queue")

    async def scenario() -> SlowUpstream:
        upstream = SlowUpstream(delay=1.0)
        await upstream.start()
        try:
            store = _open(directory)
            try:
                queue = store.queue("otlphttp/traces", Signal.TRACES)
                body, items = _record("aabbccdd", 0)  # one lease, four requests of two spans
                await store.put([queue], body, items, Signal.TRACES)
                exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression="none"))
                await exporter.start()
                sender = Sender(exporter, queue, RetryConfig(**FAST), 1, HALVES, SenderHost(), timeout=5)
                await sender.start()
                try:
                    await _until(lambda: len(upstream.order) >= 4, 10)  # the second part is under way
                finally:
                    await sender.shutdown(grace=1.5)  # over after that part's answer, before the next's
                    await exporter.shutdown()
            finally:
                await store.close()
            upstream.delay = 0
            store = _open(directory)
            try:
                queue = store.queue("otlphttp/traces", Signal.TRACES)
                await _run_sender(store, upstream.url, RetryConfig(**FAST), SenderHost(), lambda: queue.entries == 0)
            finally:
                await store.close()
            return upstream
        finally:
            await upstream.stop()

    upstream = asyncio.run(scenario())
    assert dict(upstream.accepted) == {i.to_bytes(8, "big"): 1 for i in range(8)}
    assert upstream.order == ["a", "a", "b", "b", "c", "c", "d", "d"]
