"""The failover connector: which level a request goes to, and what a failure there does.

`Levels` is the connector's state without I/O, driven here with explicit times. The
connector itself is tested with real otlphttp exporters and real upstreams on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.configretry import RetryConfig
from edgeagent.connectors.failover import LAST_RESORT, NORMAL, RETRY, FailoverConfig, FailoverConnector, Levels
from edgeagent.connectors.subpipeline import SubPipeline
from edgeagent.errors import PermanentError, RetryableError, ShutdownError
from edgeagent.exporters.chain import TIME_SPLIT_FLOOR, ExportChain
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.processors.resource import ResourceConfig, ResourceProcessor
from edgeagent.signals import Signal
from tests.helpers.net import free_port
from tests.helpers.upstream import Upstream


def _fail_over(levels: Levels, now: float, to: int) -> None:
    """One request finds every level above `to` failing and `to` accepting."""
    plan = levels.plan(now)
    failed = []
    for level, kind in plan:
        if level == to:
            levels.succeeded(level, kind, failed, now)
            return
        levels.failed(level, kind)
        failed.append(level)
    raise AssertionError(f"level {to} not in the plan {plan}")


def test_a_failing_active_level_makes_the_next_level_active_until_the_retry_interval():
    levels = Levels(3, retry_interval=10, retry_gap=0, max_retries=0)
    assert levels.plan(0) == [(0, NORMAL), (1, NORMAL), (2, NORMAL)]
    _fail_over(levels, 0, to=1)
    assert levels.active == 1
    assert levels.plan(9.9) == [(1, NORMAL), (2, NORMAL), (0, LAST_RESORT)]
    assert levels.plan(10) == [(0, RETRY), (1, NORMAL), (2, NORMAL)]
    assert levels.plan(10.1) == [(1, NORMAL), (2, NORMAL), (0, LAST_RESORT)], "one request carries each retry"


def test_a_successful_retry_returns_traffic_to_the_higher_level():
    levels = Levels(2, retry_interval=10, retry_gap=0, max_retries=5)
    _fail_over(levels, 0, to=1)
    assert levels.plan(10)[0] == (0, RETRY)
    assert levels.succeeded(0, RETRY, [], 10)
    assert levels.active == 0 and levels.next_retry is None
    assert levels.plan(20) == [(0, NORMAL), (1, NORMAL)]


def test_max_retries_stops_retrying_a_level_until_the_connector_falls_back_through_it():
    levels = Levels(3, retry_interval=10, retry_gap=0, max_retries=2)
    _fail_over(levels, 0, to=1)
    for now in (10, 20):
        assert levels.plan(now)[0] == (0, RETRY)
        exhausted = levels.failed(0, RETRY)
    assert exhausted and levels.failed_retries == [2, 0, 0]
    assert levels.next_retry == 30
    assert levels.plan(30) == [(1, NORMAL), (2, NORMAL), (0, LAST_RESORT)]
    assert levels.next_retry is None, "no level left to retry"
    # level 1 fails too: level 2 takes over, level 1 is retried, level 0 (still exhausted) is not
    _fail_over(levels, 40, to=2)
    assert levels.failed_retries == [2, 0, 0]
    assert levels.plan(50) == [(1, RETRY), (2, NORMAL), (0, LAST_RESORT)]


def test_max_retries_zero_retries_without_limit():
    levels = Levels(2, retry_interval=1, retry_gap=0, max_retries=0)
    _fail_over(levels, 0, to=1)
    for now in range(1, 100):
        assert levels.plan(now)[0] == (0, RETRY)
        assert not levels.failed(0, RETRY)


def test_retry_gap_retries_one_level_per_gap_highest_first():
    levels = Levels(3, retry_interval=60, retry_gap=10, max_retries=0)
    _fail_over(levels, 0, to=1)
    _fail_over(levels, 1, to=2)  # next retry round at 61
    assert levels.plan(61)[0] == (0, RETRY)
    levels.failed(0, RETRY)
    assert levels.plan(70)[0] == (2, NORMAL), "the gap has not passed"
    assert levels.plan(71)[0] == (1, RETRY)
    levels.failed(1, RETRY)
    assert levels.next_retry == 121, "the next round starts retry_interval after the last one started"
    assert levels.plan(121)[0] == (0, RETRY)


def test_a_success_planned_before_a_switch_does_not_switch_back():
    levels = Levels(2, retry_interval=10, retry_gap=0, max_retries=0)
    in_flight = levels.plan(0)  # planned while level 0 was active
    _fail_over(levels, 0, to=1)  # another request saw level 0 fail
    assert not levels.succeeded(in_flight[0][0], in_flight[0][1], [], 0.5)
    assert levels.active == 1
    # and a request planned on level 1 that succeeds there after a retry moved back to 0
    planned = levels.plan(1)
    assert levels.plan(10)[0] == (0, RETRY) and levels.succeeded(0, RETRY, [], 10)
    assert not levels.succeeded(planned[0][0], planned[0][1], [], 10.5)
    assert levels.active == 0


def test_when_every_lower_level_fails_the_higher_levels_are_tried_before_giving_up():
    levels = Levels(2, retry_interval=600, retry_gap=0, max_retries=1)
    _fail_over(levels, 0, to=1)
    assert levels.plan(600)[0] == (0, RETRY)
    assert levels.failed(0, RETRY)  # exhausted: no more retries of level 0
    plan = levels.plan(700)
    assert plan == [(1, NORMAL), (0, LAST_RESORT)]
    assert levels.succeeded(0, LAST_RESORT, [1], 700)
    assert levels.active == 0 and levels.failed_retries == [0, 0]


# ---- the connector with real exporters and upstreams ------------------------------------------

class Host:
    """The part of the agent sub-pipelines report to: counters and upstream state."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], float] = defaultdict(float)
        self.online: dict[str, bool] = {}

    def count(self, name: str, amount: float, *labels: str) -> None:
        self.counts[(name, *labels)] += amount

    def counter_inc(self, name: str, amount: float, *labels: str) -> None:
        self.count(name, amount, *labels)

    def upstream_state(self, exporter_id: str, online: bool) -> None:
        self.online[exporter_id] = online

    def exporter_problem(self, exporter_id: str, problem: str | None) -> None:
        return None


def _request(spans: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        span = scope.spans.add(name=f"op-{index}")
        span.span_id = index.to_bytes(8, "big")
        span.trace_id = bytes(16)
    return request.SerializeToString()


@pytest.fixture
def upstreams():
    started: list[Upstream] = []

    def start(count: int) -> list[Upstream]:
        started.extend(Upstream(free_port()).start() for _ in range(count))
        return started[-count:]

    yield start
    for upstream in started:
        upstream.stop()


def _connector(levels: dict[str, list[Upstream]], host: Host, timeout: float = 5,
               **settings) -> tuple[FailoverConnector, list]:
    """A connector whose levels are pipelines named after their upstreams, one exporter each."""
    exporters, pipelines = [], {}
    for pipeline_id, servers in levels.items():
        level_exporters = [OtlpHttpExporter(f"otlphttp/{pipeline_id}-{index}",
                                            OtlpHttpConfig(endpoint=server.url, compression="none", timeout=timeout))
                           for index, server in enumerate(servers)]
        exporters += level_exporters
        pipelines[pipeline_id] = SubPipeline(pipeline_id, [], level_exporters, host)
    config = FailoverConfig(priority_levels=[[pipeline_id] for pipeline_id in levels], **settings)
    connector = FailoverConnector("failover", config, host)
    connector.attach(pipelines)
    return connector, exporters


def _run(connector: FailoverConnector, exporters: list, scenario) -> None:
    async def main() -> None:
        for exporter in exporters:
            await exporter.start()
        try:
            await scenario()
        finally:
            for exporter in exporters:
                await exporter.shutdown()

    asyncio.run(main())


def test_a_level_fails_when_one_of_its_exporters_fails_and_the_next_level_gets_the_request(upstreams):
    first, second, backup = upstreams(3)
    first.status = 503
    host = Host()
    connector, exporters = _connector({"traces/primary": [first, second], "traces/backup": [backup]}, host)

    async def scenario() -> None:
        await connector.send(Signal.TRACES, _request(5))

    _run(connector, exporters, scenario)
    assert connector.active_level == 1
    assert len(backup.spans()) == 5
    assert len(second.spans()) == 5, "the healthy exporter of the failed level got it too (at least once)"
    assert host.counts[("otelcol_exporter_send_failed_spans", "otlphttp/traces/primary-0")] == 5
    assert host.counts[("otelcol_exporter_sent_spans", "otlphttp/traces/backup-0")] == 5


@pytest.mark.parametrize("primary_status,backup_status,error,message", [
    (400, 401, PermanentError, "otlphttp/traces/backup-0"),  # every level refused it for good: dead-lettered
    (503, 503, RetryableError, "every failover priority level failed"),  # the data stays queued
    (401, 503, RetryableError, "every failover priority level failed"),  # a level may take it later
], ids=["every-level-refuses-for-good", "every-level-down", "refused-and-down"])
def test_a_request_that_no_level_takes_raises_and_keeps_the_active_level(upstreams, primary_status, backup_status,
                                                                         error, message):
    primary, backup = upstreams(2)
    primary.status, backup.status = primary_status, backup_status
    connector, exporters = _connector({"traces/primary": [primary], "traces/backup": [backup]}, Host())

    async def scenario() -> None:
        with pytest.raises(error, match=message):
            await connector.send(Signal.TRACES, _request(3))

    _run(connector, exporters, scenario)
    assert connector.active_level == 0
    assert primary.attempts == 1 and backup.attempts == 1


@pytest.mark.parametrize("status", [401, 404])
def test_a_level_that_refuses_a_whole_request_for_good_hands_it_to_the_next_level(upstreams, status):
    """otelcol's failover moves on at any error of a level: a primary answering 401 (a revoked
    token) or 404 (a wrong path) is the outage failover is for. Its rejection was dead-lettered
    while the backup would have taken the data."""
    primary, backup = upstreams(2)
    primary.status = status
    connector, exporters = _connector({"traces/primary": [primary], "traces/backup": [backup]}, Host())

    async def scenario() -> None:
        await connector.send(Signal.TRACES, _request(3))

    _run(connector, exporters, scenario)
    assert len(backup.spans()) == 3 and connector.active_level == 1


def test_concurrent_requests_during_an_outage_switch_once_and_retry_the_primary_with_one_request(upstreams):
    primary, backup = upstreams(2)
    primary.status = 503
    connector, exporters = _connector({"traces/primary": [primary], "traces/backup": [backup]}, Host(),
                                      retry_interval=0.3)

    async def scenario() -> None:
        await asyncio.gather(*(connector.send(Signal.TRACES, _request(2)) for _ in range(10)))
        assert connector.active_level == 1
        before = primary.attempts
        await asyncio.sleep(0.35)
        await asyncio.gather(*(connector.send(Signal.TRACES, _request(2)) for _ in range(10)))
        assert primary.attempts == before + 1, "one request carries the retry"
        primary.status = 200
        await asyncio.sleep(0.35)
        await asyncio.gather(*(connector.send(Signal.TRACES, _request(2)) for _ in range(10)))
        assert connector.active_level == 0
        assert len(primary.spans()) == 2, "requests planned before the retry succeeded stay on the backup"
        await asyncio.gather(*(connector.send(Signal.TRACES, _request(2)) for _ in range(10)))

    _run(connector, exporters, scenario)
    assert len(primary.spans()) == 22 and len(backup.spans()) == 58


def test_a_413_in_a_level_is_split_there_and_only_the_refused_single_items_come_back(upstreams):
    (primary,) = upstreams(1)
    primary.max_items = 1  # one span fits; the request of 4 is halved down to single spans
    connector, exporters = _connector({"traces/primary": [primary]}, Host())

    async def scenario() -> None:
        await connector.send(Signal.TRACES, _request(4))
        assert len(primary.spans()) == 4
        primary.max_items = 0  # even one span is too large
        with pytest.raises(PermanentError) as refused:
            await connector.send(Signal.TRACES, _request(2))
        assert refused.value.status == 413
        assert [items for _, items in refused.value.parts] == [1, 1]  # the caller stores exactly these

    _run(connector, exporters, scenario)
    assert connector.active_level == 0


@pytest.mark.parametrize("backup_answers,unanswered", [(False, True), (True, False)],
                         ids=["every-level-refuses", "backup-answers-503"])
def test_a_request_no_level_took_counts_as_unanswered_only_when_no_level_answered(upstreams, backup_answers,
                                                                                  unanswered):
    primary = Upstream(free_port())  # never started: connections are refused
    backup = upstreams(1)[0] if backup_answers else Upstream(free_port())
    backup.status = 503
    connector, exporters = _connector({"traces/primary": [primary], "traces/backup": [backup]}, Host())
    # the connector's sender watches where the exporters of every level connect
    assert connector.upstream_addresses() == [("127.0.0.1", primary.port), ("127.0.0.1", backup.port)]

    async def scenario() -> None:
        with pytest.raises(RetryableError, match="every failover priority level failed") as failed:
            await connector.send(Signal.TRACES, _request(3))
        assert failed.value.connection is unanswered
        assert failed.value.unanswered is unanswered, "the sender watches for a level to listen only when none did"

    _run(connector, exporters, scenario)


def test_a_level_whose_upstream_does_not_answer_in_time_fails_over_after_one_timeout(upstreams):
    """A sub-pipeline makes one attempt (otelcol: a timeout is one failed export). Its chain halved
    a request its timeout ended and gave each half a timeout of its own: a request of 300 kB
    reached the backup only after four timeouts at the primary."""
    primary, backup = upstreams(2)
    primary.hang = 1.0  # reads the request, answers after the exporter's timeout
    connector, exporters = _connector({"traces/primary": [primary], "traces/backup": [backup]}, Host(),
                                      timeout=0.25)
    body = _request(8000)
    assert len(body) > 4 * TIME_SPLIT_FLOOR  # large enough to be halved three times

    async def scenario() -> None:
        started = time.monotonic()
        await asyncio.wait_for(connector.send(Signal.TRACES, body), 10)
        took = time.monotonic() - started
        await asyncio.sleep(primary.hang + 0.2)  # the primary records each request once it answered it
        assert primary.attempts == 1, f"{primary.attempts} attempts at the primary"
        assert took < 2 * 0.25, f"the backup got the request after {took:.2f}s"

    _run(connector, exporters, scenario)
    assert len(backup.spans()) == 8000 and connector.active_level == 1


class _SecondHalfFails(Upstream):
    """Takes at most two spans at a time (413 above that) and answers 503 to a request from the third
    span on while `failing`: a request of four spans is delivered in part."""

    failing = True

    def _handler(self, signal: str):
        handle = super()._handler(signal)

        async def second_half_fails(request: web.Request) -> web.Response:
            spans = ExportTraceServiceRequest.FromString(await request.read()).resource_spans[0].scope_spans[0].spans
            if len(spans) <= 2 and int.from_bytes(spans[0].span_id, "big") >= 2 and self.failing:
                return web.Response(status=503, text="the second half fails")
            return await handle(request)

        return second_half_fails


def test_a_request_a_level_delivered_in_part_is_retried_with_only_the_undelivered_part():
    """The sub-pipeline's chain split the request (413) and delivered the first half before the
    second failed; the error lost that, and each retry of the connector's sender sent the whole
    request again: the first half reached the upstream once per attempt."""
    primary = _SecondHalfFails(free_port(), max_items=2).start()
    host = Host()
    connector, exporters = _connector({"traces/primary": [primary]}, host)
    outer = ExportChain(connector, Signal.TRACES, host, drains_queue=True,
                        retry=RetryConfig(initial_interval=0.05, max_interval=0.05, randomization_factor=0,
                                          max_elapsed_time=0.3))

    async def scenario() -> None:
        with pytest.raises(RetryableError) as failed:
            await asyncio.wait_for(outer.export([(_request(4), 4)]), 10)
        assert received(primary) == [0, 1], f"the first half arrived {len(received(primary)) // 2} times"
        assert failed.value.unsent is not None, "the sender would put the whole request back"
        assert [items for _, items in failed.value.unsent] == [2]
        primary.failing = False
        await asyncio.wait_for(outer.export(failed.value.unsent), 10)  # as the sender sends what it put back

    try:
        _run(connector, exporters, scenario)
    finally:
        primary.stop()
    assert received(primary) == [0, 1, 2, 3]


class _SecondHalfFailsSlowly(_SecondHalfFails):
    """As _SecondHalfFails, its 503 coming 0.3 s after the request: a stop can land meanwhile."""

    def _handler(self, signal: str):
        handle = super()._handler(signal)

        async def slowly(request: web.Request) -> web.Response:
            response = await handle(request)
            if response.status == 503:
                await asyncio.sleep(0.3)
            return response

        return slowly


def test_a_request_a_level_delivered_in_part_when_the_agent_stops_gives_back_only_the_rest():
    """A failure that came once the stop had begun ended the export with ShutdownError and nothing
    else: the sender put the whole request back, and the next run sent the first half again."""
    primary = _SecondHalfFailsSlowly(free_port(), max_items=2).start()
    host = Host()
    connector, exporters = _connector({"traces/primary": [primary]}, host)
    outer = ExportChain(connector, Signal.TRACES, host, drains_queue=True,
                        retry=RetryConfig(initial_interval=5, max_interval=5, max_elapsed_time=0))

    async def scenario() -> None:
        export = asyncio.create_task(outer.export([(_request(4), 4)]))
        for _ in range(500):  # at most 5 s for the first half, then the second is on its way
            if received(primary):
                break
            await asyncio.sleep(0.01)
        outer.stop()
        with pytest.raises(ShutdownError) as stopped:
            await asyncio.wait_for(export, 10)
        assert stopped.value.unsent is not None, "the sender would put the whole request back"
        assert [items for _, items in stopped.value.unsent] == [2]

    try:
        _run(connector, exporters, scenario)
    finally:
        primary.stop()
    assert received(primary) == [0, 1]


def received(upstream: Upstream) -> list[int]:
    """The numbers of the spans the upstream took, in order, each as often as it took it."""
    return sorted(int.from_bytes(span.span_id, "big") for span in upstream.spans())


def test_a_request_a_level_changed_and_delivered_in_part_is_retried_whole():
    """The rest a level's chain leaves is cut from the request its processors changed: put back in
    the connector's queue, it would run through them again (a hash of a hash)."""
    primary = _SecondHalfFails(free_port(), max_items=2).start()
    host = Host()
    connector, exporters = _connector({"traces/primary": [primary]}, host)
    upsert = [{"key": "region", "value": "eu", "action": "upsert"}]
    connector.levels[0][0].processors = [ResourceProcessor("resource", ResourceConfig.model_validate(
        {"attributes": upsert}))]
    outer = ExportChain(connector, Signal.TRACES, host, drains_queue=True)  # one attempt

    async def scenario() -> None:
        with pytest.raises(RetryableError) as failed:
            await asyncio.wait_for(outer.export([(_request(4), 4)]), 10)
        assert failed.value.unsent is None

    try:
        _run(connector, exporters, scenario)
    finally:
        primary.stop()
    assert received(primary) == [0, 1]


def test_a_request_delivered_in_part_by_one_exporter_and_refused_by_another_of_the_level_is_retried_whole(
        upstreams):
    """Both exporters of the level get every request: the rest of one would leave the other without
    the parts the first took."""
    primary = _SecondHalfFails(free_port(), max_items=2).start()
    (refusing,) = upstreams(1)
    refusing.status = 401
    host = Host()
    connector, exporters = _connector({"traces/primary": [primary, refusing]}, host)
    outer = ExportChain(connector, Signal.TRACES, host, drains_queue=True)  # one attempt

    async def scenario() -> None:
        with pytest.raises(RetryableError) as failed:
            await asyncio.wait_for(outer.export([(_request(4), 4)]), 10)
        assert failed.value.unsent is None

    try:
        _run(connector, exporters, scenario)
    finally:
        primary.stop()
    assert received(primary) == [0, 1]
