"""A backlog's drain as status and the log report it: progress while a backlog drains, never for the
data a healthy agent has in flight, and no time to empty on a rate from before the sends failed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

from edgeagent.service import health
from edgeagent.service import telemetry as telemetry_module
from edgeagent.service.telemetry import Telemetry

INTERVAL = 0.01


def _state(drain: str, items: int, oldest: float) -> dict[str, Any]:
    rate = 900.0 if drain == "draining" else 0.0
    return {"drain": drain, "backlog_items": items, "oldest_age_seconds": oldest, "drain_items_per_second": rate,
            "eta_seconds": round(items / rate, 1) if rate else None}


def _report(states: list[dict[str, Any]], caplog) -> list[str]:
    """The messages report_drain logs over `states`, one state a report."""
    pending: Iterator[dict[str, Any]] = iter(states)
    done = asyncio.Event()

    def status_of() -> dict[str, Any]:
        state = next(pending, None)
        if state is None:
            done.set()
            return states[-1]
        return state

    async def run() -> None:
        task = asyncio.create_task(health.report_drain(status_of, INTERVAL))
        await asyncio.wait_for(done.wait(), timeout=5)
        task.cancel()

    with caplog.at_level(logging.INFO, logger=health.log.name):
        asyncio.run(run())
    return [record.getMessage() for record in caplog.records if record.name == health.log.name]


def test_steady_traffic_in_flight_is_not_logged_as_a_draining_backlog(caplog):
    # a healthy gateway always has a few hundred items queued for a moment, none older than a second
    steady = [_state("draining", 450, 0.7), _state("draining", 550, 0.5), _state("empty", 0, 0.0),
              _state("draining", 500, 0.9)] * 3
    assert _report(steady, caplog) == []


def test_a_backlog_left_by_an_outage_is_reported_until_drained(caplog):
    outage = [_state("waiting for upstream", 9000, 40.0), _state("waiting for upstream", 9500, 45.0),
              _state("draining", 5000, 50.0), _state("draining", 600, 30.0), _state("draining", 300, 0.4),
              _state("empty", 0, 0.0)]
    assert _report(outage, caplog) == ["backlog waiting for upstream", "draining the backlog",
                                       "draining the backlog", "backlog drained"]


def test_a_backlog_that_empties_between_two_reports_is_said_drained(caplog):
    # the warning said data waits: the operator is told when it no longer does
    quick = [_state("waiting for upstream", 2000, 3.0), _state("empty", 0, 0.0), _state("empty", 0, 0.0)]
    assert _report(quick, caplog) == ["backlog waiting for upstream", "backlog drained"]


def test_an_upstream_lost_again_mid_drain_is_warned_again(caplog):
    flap = [_state("waiting for upstream", 9000, 40.0), _state("draining", 5000, 50.0),
            _state("waiting for upstream", 4000, 55.0), _state("waiting for upstream", 4200, 60.0)]
    assert _report(flap, caplog) == ["backlog waiting for upstream", "draining the backlog",
                                     "backlog waiting for upstream"]


def _details(problem: dict[str, str], items: dict[str, int]) -> dict[str, Any]:
    """Health details of two exporters, `a` and `b`, as health.health gives them."""
    exporters = {name: {"endpoint": f"http://{name}", "upstream": "online",
                        **({"problem": problem[name]} if name in problem else {})} for name in ("a", "b")}
    queues = {f"{name}/traces": {"entries": 1 if count else 0, "items": count, "bytes": 0,
                                 "oldest_age_seconds": 30.0 if count else 0.0} for name, count in items.items()}
    return {"exporters": exporters, "connectors": {}, "queues": queues}


def test_an_upstream_refusing_every_send_is_retrying_not_draining_on_a_rate_from_before():
    # 1,000 items/s went out until the upstream began answering 503 (reachable: "online"); the rate of
    # the last minute still counts them, and promised the backlog gone in seconds while nothing moved
    telemetry = Telemetry()
    telemetry.drain.add(30_000)
    status = health.status(_details({"a": "upstream answered 503: overloaded"}, {"a": 1000, "b": 0}), telemetry)
    assert status["drain"] == "retrying" and status["eta_seconds"] is None


def test_a_problem_left_on_an_exporter_with_nothing_queued_does_not_stop_the_others_eta():
    # a's last batch was refused for good (dead-lettered): its problem stays until it delivers again
    telemetry = Telemetry()
    telemetry.drain.add(30_000)
    status = health.status(_details({"a": "upstream answered 400"}, {"a": 0, "b": 1000}), telemetry)
    assert status["drain"] == "draining" and status["eta_seconds"] is not None


def test_a_slow_drain_is_not_shown_as_a_rate_of_zero_beside_its_time_to_empty(monkeypatch):
    # a metrics-only gateway on a poor link: 2 data points delivered in the last minute
    telemetry = Telemetry()
    now = time.monotonic()
    monkeypatch.setattr(telemetry_module.time, "monotonic", lambda: now - 59)
    telemetry.drain.add(2)
    monkeypatch.setattr(telemetry_module.time, "monotonic", lambda: now)
    status = health.status(_details({}, {"a": 100, "b": 0}), telemetry)
    assert status["drain"] == "draining"
    assert status["drain_items_per_second"] > 0 and status["eta_seconds"] > 0
    assert abs(status["backlog_items"] / status["drain_items_per_second"] - status["eta_seconds"]) < 30


def test_a_look_that_fails_is_counted_logged_once_and_the_report_goes_on(caplog):
    # a failing look ended the report's task, and with it the agent (exit 1)
    telemetry = Telemetry()
    looks = 0
    looked = asyncio.Event()

    def status_of() -> dict[str, Any]:
        nonlocal looks
        looks += 1
        if looks <= 2:
            raise RuntimeError("a bug in the status")
        if looks >= 5:
            looked.set()
        return _state("waiting for upstream", 9000, 40.0)

    async def run() -> None:
        task = asyncio.create_task(health.report_drain(status_of, INTERVAL, telemetry))
        await asyncio.wait_for(looked.wait(), timeout=5)
        task.cancel()

    with caplog.at_level(logging.INFO):
        asyncio.run(run())
    assert telemetry.metrics.counters["edgeagent_background_errors"].get("drain-report") == 2
    assert [record.getMessage() for record in caplog.records] == [
        "a background task failed; it goes on at its next interval", "backlog waiting for upstream",
        "a background task works again"]
