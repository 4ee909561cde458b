"""The export chain with a real otlphttp exporter and a real upstream on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from edgeagent.configretry import RetryConfig
from edgeagent.errors import RetryableError, ShutdownError, ThrottledError
from edgeagent.exporters.chain import Delivery, ExportChain
from edgeagent.exporters.link import Link
from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.http1 import wire
from edgeagent.signals import Signal
from tests.helpers.grpc_upstream import Answer, GrpcUpstream
from tests.helpers.net import free_port


class Host:
    """What the chain reports to: counters, upstream state, the exporter's problem."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], float] = defaultdict(float)
        self.problems: dict[str, str | None] = {}
        self.problems_seen: list[str] = []

    def count(self, name: str, amount: float, *labels: str) -> None:
        self.counts[(name, *labels)] += amount

    counter_inc = count

    def upstream_state(self, exporter_id: str, online: bool) -> None:
        return None

    def exporter_problem(self, exporter_id: str, problem: str | None) -> None:
        self.problems[exporter_id] = problem
        if problem is not None:
            self.problems_seen.append(problem)


def _request(spans: int, name: str = "op") -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        scope.spans.add(name=name, span_id=index.to_bytes(8, "big"), trace_id=bytes(16))
    return request.SerializeToString()


async def exported(exporter, chain: ExportChain, parts: list[tuple[bytes, int]]) -> Delivery:
    """`chain.export(parts)` between the exporter's start and its shutdown."""
    await exporter.start()
    try:
        return await chain.export(parts)
    finally:
        await exporter.shutdown()


def test_a_backoff_wait_ends_at_shutdown_and_the_request_is_kept(upstream):
    upstream.status = 503
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression="none"))
    host = Host()
    chain = ExportChain(exporter, Signal.TRACES, host, timeout=5,
                        retry=RetryConfig(initial_interval=30, max_interval=30, max_elapsed_time=0))

    async def scenario() -> float:
        await exporter.start()
        try:
            export = asyncio.create_task(chain.export([(_request(3), 3)]))
            for _ in range(500):  # at most 5 s for the first attempt's answer: the backoff wait follows at once
                if host.problems.get("otlphttp"):
                    break
                await asyncio.sleep(0.01)
            stopped = time.monotonic()
            chain.stop()
            try:
                await asyncio.wait_for(export, 5)
            except ShutdownError:
                return time.monotonic() - stopped
            raise AssertionError("the export did not end with ShutdownError")
        finally:
            await exporter.shutdown()

    assert asyncio.run(scenario()) < 1.0  # not the 30 s backoff
    assert upstream.attempts == 1
    assert host.counts[("otelcol_exporter_send_failed_spans", "otlphttp")] == 3
    assert "503" in (host.problems["otlphttp"] or "")


def test_a_successful_send_records_failed_items_as_zero_so_a_failure_ratio_has_both_series(upstream):
    """The deployment guide alerts on rate(send_failed) / rate(sent). A failed series born at the first
    failure would hide that failure's increase from rate()."""
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression="none"))
    host = Host()
    chain = ExportChain(exporter, Signal.TRACES, host, timeout=5, retry=RetryConfig())

    asyncio.run(exported(exporter, chain, [(_request(3), 3)]))
    assert host.counts[("otelcol_exporter_sent_spans", "otlphttp")] == 3
    assert ("otelcol_exporter_send_failed_spans", "otlphttp") in host.counts
    assert host.counts[("otelcol_exporter_send_failed_spans", "otlphttp")] == 0


def test_a_hostile_retry_after_does_not_pause_the_exporter_without_bound(upstream, monkeypatch, caplog):
    """An upstream answering `Retry-After: 999999999` must not stop every consumer for 31 years: the
    honoured delay is capped (at RETRY_AFTER_CEILING, shortened here) and the cap is logged once."""
    from edgeagent import configretry as retry_module

    monkeypatch.setattr(retry_module, "RETRY_AFTER_CEILING", 0.5)
    upstream.status, upstream.retry_after = 503, "999999999"
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression="none"))
    host = Host()
    retry = RetryConfig(initial_interval=0.05, max_interval=0.1, max_elapsed_time=0)
    link = Link(2, retry, lambda online: None)
    chain = ExportChain(exporter, Signal.TRACES, host, timeout=5, retry=retry, link=link)

    async def scenario() -> float:
        await exporter.start()
        try:
            started = time.monotonic()
            export = asyncio.create_task(chain.export([(_request(3), 3)]))
            for _ in range(500):  # at most 5 s for the refusals
                if upstream.attempts >= 3:
                    break
                await asyncio.sleep(0.01)
            upstream.status, upstream.retry_after = 200, None
            try:
                await asyncio.wait_for(export, 10)
            finally:
                chain.stop()
            return time.monotonic() - started
        finally:
            await exporter.shutdown()

    with caplog.at_level("WARNING", logger="edgeagent.exporters.chain"):
        elapsed = asyncio.run(scenario())
    assert elapsed < 8.0
    assert host.counts[("otelcol_exporter_sent_spans", "otlphttp")] == 3
    capped = [record for record in caplog.records if "Retry-After" in record.getMessage()]
    assert len(capped) == 1, [record.getMessage() for record in caplog.records]


def test_an_early_413_from_an_upstream_that_stops_reading_is_split_without_waiting_for_the_timeout():
    """An upstream refusing a large body with 413 as soon as its head came, then reading no more of
    it (its receive buffer small, the exporter's send buffer too), must lead to the split at once:
    waiting until the write times out would make every half wait as long."""
    seen: list[tuple[int, int]] = []  # (body length, status)
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (block := await wire.read_head(reader)) is not None:
                length = int(wire.parse_head(block)[1]["Content-Length"])
                if length > 64 * 1024:
                    seen.append((length, 413))
                    writer.transport.pause_reading()  # the kernel's buffers fill, not the stream's
                    writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
                    await asyncio.wait_for(done.wait(), 30)  # the body is never read
                    return
                await reader.readexactly(length)
                seen.append((length, 200))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
        finally:
            writer.close()

    async def scenario() -> float:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(serve, sock=sock)
        config = OtlpHttpConfig(endpoint=f"http://127.0.0.1:{sock.getsockname()[1]}", compression="none",
                                timeout="10s", write_buffer_size=4096)
        exporter = OtlpHttpExporter("otlphttp", config)
        chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=10,
                            retry=RetryConfig(initial_interval=30, max_interval=30, max_elapsed_time=0))
        await exporter.start()
        try:
            started = time.monotonic()
            delivery = await asyncio.wait_for(chain.export([(_request(2000, name="x" * 200), 2000)]), 15)
            assert delivery.sent == 2000 and not delivery.refused
            return time.monotonic() - started
        finally:
            chain.stop()
            await exporter.shutdown()
            done.set()
            server.close()

    elapsed = asyncio.run(scenario())
    assert elapsed < 5.0  # not one 10 s timeout
    statuses = [status for _, status in seen]  # halves of halves of halves: 468, 234, 117 and 58 KB
    assert (statuses.count(413), statuses.count(200)) == (7, 8)


def _retry_count(upstream, retry: RetryConfig, seconds: float) -> tuple[int, float]:
    """Requests the upstream got while one export retried for `seconds` (and when the second came)."""
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression="none"))
    chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=5, retry=retry)

    async def scenario() -> None:
        await exporter.start()
        export = asyncio.create_task(chain.export([(_request(3), 3)]))
        try:
            await asyncio.sleep(seconds)
        finally:
            chain.stop()
            await asyncio.gather(export, return_exceptions=True)
            await exporter.shutdown()

    asyncio.run(scenario())
    calls = list(upstream.calls)
    return len(calls), (calls[1].at - calls[0].at if len(calls) > 1 else seconds)


def test_a_retry_after_of_zero_does_not_cut_the_backoff_short(upstream):
    """`Retry-After: 0` (or a date in the past) may only lengthen the backoff, as otelcol's retry
    sender takes the larger of the two: used instead of it, it made thousands of requests a second."""
    upstream.status, upstream.retry_after = 503, "0"
    retry = RetryConfig(initial_interval=0.25, randomization_factor=0, max_interval=0.25, max_elapsed_time=0)
    attempts, _ = _retry_count(upstream, retry, 1.0)
    assert attempts <= 6  # one, then one per 0.25 s


@pytest.mark.e2e  # waits seconds by design
def test_a_retry_after_longer_than_the_backoff_is_waited_out(upstream):
    upstream.status, upstream.retry_after = 429, "1"
    retry = RetryConfig(initial_interval=0.25, randomization_factor=0, max_interval=0.25, max_elapsed_time=0)
    attempts, gap = _retry_count(upstream, retry, 1.6)
    assert attempts == 2 and gap >= 1.0


def test_a_negative_grpc_retry_info_is_no_delay_at_all():
    """A RetryInfo of -5 s (clock skew, a bug upstream) is read as 0, never as a delay to subtract."""
    upstream = GrpcUpstream(free_port()).start()
    upstream.script(Answer(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay=-5.0))
    exporter = OtlpGrpcExporter("otlp", OtlpGrpcConfig(endpoint=upstream.endpoint, tls={"insecure": True},
                                                       compression="none"))

    async def scenario() -> float | None:
        await exporter.start()
        try:
            await exporter.send(Signal.TRACES, _request(1))
        except ThrottledError as exc:
            return exc.retry_after
        finally:
            await exporter.shutdown()
        raise AssertionError("RESOURCE_EXHAUSTED with RetryInfo was not a throttle")

    try:
        assert asyncio.run(scenario()) == 0.0
    finally:
        upstream.stop()


def test_a_wait_for_the_bandwidth_cap_is_not_an_upstream_that_did_not_answer(upstream):
    """Requests queued behind `rate_limit` wait seconds for their turn: that wait is no part of the
    attempt's timeout, so an upstream answering at once is never "did not answer within 0.3s",
    never offline, and gets each request once."""
    config = OtlpHttpConfig(endpoint=upstream.url, compression="none", timeout=0.3,
                            rate_limit={"bytes_per_second": 8000})
    exporter = OtlpHttpExporter("otlphttp", config)
    retry = RetryConfig(initial_interval=0.2, max_interval=0.2, max_elapsed_time=0)
    states: list[bool] = []
    host = Host()

    async def scenario() -> None:
        await exporter.start()
        link = Link(4, retry, states.append, exporter.upstream_addresses(), "otlphttp")
        chain = ExportChain(exporter, Signal.TRACES, host, timeout=0.3, retry=retry, link=link, drains_queue=True)
        body = _request(120)  # about 5 KB: 0.6 s of the cap each, twice the attempt's timeout
        assert 4000 < len(body) < 6000
        try:
            await asyncio.wait_for(asyncio.gather(*(chain.export([(body, 120)]) for _ in range(3))), 15)
        finally:
            chain.stop()
            link.close()
            await exporter.shutdown()

    asyncio.run(scenario())
    assert host.counts[("otelcol_exporter_sent_spans", "otlphttp")] == 360
    assert upstream.attempts == 3
    assert False not in states
    assert not [problem for problem in host.problems_seen if "did not answer" in problem]


class _DeadLetters:
    def __init__(self) -> None:
        self.kept: list[tuple[list[tuple[bytes, int]], dict]] = []

    async def dead_letter(self, refused: list[tuple[bytes, int]], description: dict) -> None:
        self.kept.append((refused, description))


def test_a_200_that_does_not_decode_is_dead_lettered_not_counted_as_sent():
    """The upstream may hold the data: it is neither counted as delivered nor sent again."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (block := await wire.read_head(reader)) is not None:
            await reader.readexactly(int(wire.parse_head(block)[1]["Content-Length"]))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 4\r\n\r\n"
                         b"\xff\xff\xff\xff")
        writer.close()

    host, sink = Host(), _DeadLetters()

    async def scenario() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}",
                                                               compression="none"))
        chain = ExportChain(exporter, Signal.TRACES, host, timeout=5,
                            retry=RetryConfig(initial_interval=0.1, max_interval=0.1, max_elapsed_time=0))
        await exporter.start()
        try:
            delivery = await asyncio.wait_for(chain.export([(_request(3), 3)], sink), 10)
            assert delivery.sent == 0 and delivery.refused_items == 3
        finally:
            await exporter.shutdown()
            server.close()

    asyncio.run(scenario())
    assert host.counts[("otelcol_exporter_send_failed_spans", "otlphttp")] == 3
    assert host.counts[("otelcol_exporter_sent_spans", "otlphttp")] == 0
    [(refused, description)] = sink.kept
    assert refused == [(_request(3), 3)] and description["status"] == 200
    assert "4 bytes: ffffffff" in description["reason"]


@pytest.mark.parametrize("rejected", [1000, -5])
def test_a_partial_success_rejecting_more_than_was_sent_counts_within_the_request(upstream, rejected):
    """An upstream claiming more rejected items than the request held (or a negative count) made
    `otelcol_exporter_sent_spans` go down, which a rate() reads as a counter reset, and the drain
    rate behind `status`'s time to empty negative."""
    upstream.rejected = rejected
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression="none"))
    host = Host()
    chain = ExportChain(exporter, Signal.TRACES, host, timeout=5)

    asyncio.run(exported(exporter, chain, [(_request(3), 3)]))
    sent = host.counts[("otelcol_exporter_sent_spans", "otlphttp")]
    dropped = host.counts[("edgeagent_exporter_rejected_spans", "otlphttp")]
    assert (sent, dropped) == ((0, 3) if rejected > 0 else (3, 0))


def test_a_grpc_request_larger_than_the_servers_maximum_is_split_like_a_413():
    """A gRPC server refuses a message over its max_recv_msg_size (otelcol's receiver: 4 MiB) with
    RESOURCE_EXHAUSTED and no RetryInfo. The whole batch went to the dead-letter store, where a
    replay only refuses it again; over HTTP the same request is split in halves until it fits."""
    upstream = GrpcUpstream(free_port(), max_receive=3000).start()
    exporter = OtlpGrpcExporter("otlp", OtlpGrpcConfig(endpoint=upstream.endpoint, tls={"insecure": True},
                                                       compression="none"))
    host = Host()
    chain = ExportChain(exporter, Signal.TRACES, host, timeout=5)
    body = _request(40, name="x" * 100)  # some 5 KB

    try:
        asyncio.run(exported(exporter, chain, [(body, 40)]))
        assert len(upstream.span_ids()) == 40
        assert host.counts[("otelcol_exporter_sent_spans", "otlp")] == 40
    finally:
        upstream.stop()


def test_a_request_over_the_json_bound_that_is_not_protobuf_is_dead_lettered_not_raised():
    """Cutting it to the OTLP/JSON bound raised DecodeError out of the chain: a sender took it for an
    unexpected error and sent the lease again for ever."""
    host, sink = Host(), _DeadLetters()
    damaged = b"\xff" * (5 << 20)  # over JSON_PART_BYTES

    async def scenario() -> None:
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{free_port()}",
                                                               encoding="json", compression="none"))
        chain = ExportChain(exporter, Signal.TRACES, host, timeout=5,
                            retry=RetryConfig(initial_interval=0.1, max_interval=0.1, max_elapsed_time=0))
        await exporter.start()
        try:
            delivery = await asyncio.wait_for(chain.export([(damaged, 2)], sink), 10)
            assert delivery.sent == 0 and delivery.refused_items == 2
        finally:
            await exporter.shutdown()

    asyncio.run(scenario())
    [(refused, description)] = sink.kept
    assert refused == [(damaged, 2)]
    assert "not a valid traces request" in description["reason"]
    assert host.counts[("otelcol_exporter_send_failed_spans", "otlphttp")] == 2


class _NarrowLink:
    """An upstream behind a link that carries `fits` bytes of a request within the exporter's timeout:
    a larger body is read and never answered."""

    def __init__(self, fits: int):
        self.fits = fits
        self.answered: list[int] = []
        self.unanswered: list[int] = []
        self._release = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (block := await wire.read_head(reader)) is not None:
                length = int(wire.parse_head(block)[1]["Content-Length"])
                await reader.readexactly(length)
                if length > self.fits:
                    self.unanswered.append(length)
                    await asyncio.wait_for(self._release.wait(), 30)
                    return
                self.answered.append(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self._release.set()


async def _through_narrow_link(link: _NarrowLink, exports: list[int]) -> tuple[ExportChain, list[float]]:
    """Export requests of these many spans in turn, through `link`; the chain and each export's seconds."""
    server = await asyncio.start_server(link.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}", compression="none"))
    chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=0.5, drains_queue=True,
                        retry=RetryConfig(initial_interval=30, max_interval=30, max_elapsed_time=0))
    await exporter.start()
    took = []
    try:
        for spans in exports:
            started = time.monotonic()
            delivery = await asyncio.wait_for(chain.export([(_request(spans), spans)]), 20)
            assert delivery.sent == spans
            took.append(time.monotonic() - started)
    finally:
        link.stop()
        chain.stop()
        await exporter.shutdown()
        server.close()
    return chain, took


def test_a_request_its_timeout_ends_is_sent_again_in_halves_and_later_ones_are_cut_to_what_got_through():
    """A backlog merged into large requests never got through a link that carries little within the
    timeout: each attempt was ended and the same request tried again, for good."""
    link = _NarrowLink(fits=100_000)
    chain, took = asyncio.run(_through_narrow_link(link, [6000, 6000]))  # about 210 kB each
    assert link.unanswered[0] > 200_000 and max(link.answered) <= 100_000
    assert took[0] < 3  # two timeouts (the request, then a half), no backoff of 30 s
    assert took[1] < 0.4  # cut up front to the size that got through: no timeout spent
    assert len(link.unanswered) == 2
    assert chain._fits >= 64 << 10


def test_a_request_without_a_queue_its_timeout_ends_is_one_failed_attempt_not_sent_again_in_halves():
    """The direct path makes one attempt and its caller decides (otelcol: a timeout is one failed
    export). Its chain sent the halves, each with a timeout of its own, before the caller heard."""
    link = _NarrowLink(fits=100_000)

    async def scenario() -> float:
        server = await asyncio.start_server(link.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}",
                                                               compression="none"))
        chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=0.3)  # no queue, no retry
        await exporter.start()
        started = time.monotonic()
        try:
            with pytest.raises(RetryableError, match="did not answer"):
                await asyncio.wait_for(chain.export([(_request(6000), 6000)]), 8)
            return time.monotonic() - started
        finally:
            link.stop()
            await exporter.shutdown()
            server.close()

    took = asyncio.run(scenario())
    assert len(link.unanswered) == 1 and not link.answered, (link.unanswered, link.answered)
    assert took < 0.6, took


def test_requests_grow_back_as_they_get_through_in_time_until_no_cut_is_left():
    link = _NarrowLink(fits=10_000_000)  # the link is fast again
    async def scenario() -> ExportChain:
        chain, _ = await _through_narrow_link(link, [])
        return chain
    chain = asyncio.run(scenario())
    chain._fits = 64 << 10
    chain._in_time(chain._fits, 0.4)  # most of the timeout: no growth
    assert chain._fits == 64 << 10
    for _ in range(200):
        chain._in_time(chain._fits, 0.01)
        if not chain._fits:
            break
    assert chain._fits == 0  # the cut is gone once requests of the sender's merged size get through


def test_a_request_its_timeout_ends_that_cannot_be_halved_waits_out_the_backoff_and_gives_up():
    """Bytes that are not protobuf (a record damaged in the queue, sent as they are) cannot be split:
    they were put back whole and sent again at once, each attempt ended by the timeout, for good:
    no backoff, and max_elapsed_time never reached."""
    link = _NarrowLink(fits=100_000)
    damaged = b"\xff" * 200_000

    async def scenario() -> float:
        server = await asyncio.start_server(link.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}",
                                                               compression="none"))
        chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=0.3, drains_queue=True,
                            retry=RetryConfig(initial_interval=1, max_interval=1, max_elapsed_time=1.5))
        await exporter.start()
        started = time.monotonic()
        try:
            with pytest.raises(RetryableError):
                await asyncio.wait_for(chain.export([(damaged, 2)]), 8)
            return time.monotonic() - started
        finally:
            link.stop()
            chain.stop()
            await exporter.shutdown()
            server.close()

    took = asyncio.run(scenario())
    assert took < 4
    assert len(link.unanswered) <= 3  # attempts a second apart, not one per timeout
