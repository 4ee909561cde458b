"""What the health check answers across the service's lifecycle, from a real service on loopback."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from edgeagent.config.loader import load_text
from edgeagent.service import health as health_module
from edgeagent.service.service import Service
from tests.helpers.net import free_port

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{receiver}
exporters:
  debug:
extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
service:
  extensions: [health_check]
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"""


def test_the_otelcol_path_answers_503_once_the_service_is_stopping(tmp_path):
    """otelcol marks its health check not ready first thing in its shutdown, so a load balancer
    stops sending while the pipelines stop; `/` kept answering 200 through the whole drain."""
    health = free_port()
    config = load_text(CONFIG.format(receiver=free_port(), health=health))

    async def get(session: aiohttp.ClientSession) -> int:
        async with session.get(f"http://127.0.0.1:{health}/") as response:
            return response.status

    async def scenario() -> tuple[int, int]:
        service = Service(config, str(tmp_path))
        service.build()
        await service.start()
        try:
            async with aiohttp.ClientSession() as session:
                running = await get(session)
                await service.drain(timeout=0)
                stopping = await get(session)
        finally:
            await service.shutdown()
        return running, stopping

    assert asyncio.run(scenario()) == (200, 503)


async def _get(port: int) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as response:
        return response.status


def _errors(service: Service, task: str) -> float:
    return service.telemetry.metrics.counters["edgeagent_background_errors"].get(task)


def test_a_drain_report_that_fails_is_restarted_counted_logged_once_and_the_agent_keeps_serving(
        tmp_path, monkeypatch, caplog):
    """A reporting task is no worker the agent needs: its bug stopped the whole agent (exit 1)."""
    async def broken_report(status, interval, counting):
        raise RuntimeError("a bug in the drain report")

    monkeypatch.setattr(health_module, "report_drain", broken_report)
    monkeypatch.setattr(health_module, "REPORT_EVERY", 0.05)
    health = free_port()
    config = load_text(CONFIG.format(receiver=free_port(), health=health))

    async def scenario() -> tuple[str | None, bool, float, int]:
        service = Service(config, str(tmp_path))
        service.build()
        await service.start()
        try:
            deadline = time.monotonic() + 5
            while _errors(service, "drain-report") < 3:  # started again, and again
                assert time.monotonic() < deadline, "the drain report was not started again"
                await asyncio.sleep(0.02)
            return service.fatal, service.ready(), _errors(service, "drain-report"), await _get(health)
        finally:
            await service.shutdown()

    with caplog.at_level(logging.ERROR):
        fatal, ready, errors, answer = asyncio.run(scenario())
    assert fatal is None and ready and answer == 200
    assert errors >= 3
    logged = [r for r in caplog.records if r.name == "edgeagent.runtime.supervise"]
    assert [r.getMessage() for r in logged] == ["a background task stopped unexpectedly; it starts again"]
    assert logged[0].task == "drain-report" and "a bug in the drain report" in str(logged[0].exc_info[1])


def test_a_drain_report_cancelled_from_elsewhere_starts_again_counted_and_logged(tmp_path, monkeypatch, caplog):
    """It stayed dead without a word: no backlog was reported again until the agent restarted."""
    monkeypatch.setattr(health_module, "REPORT_EVERY", 0.05)
    health = free_port()
    config = load_text(CONFIG.format(receiver=free_port(), health=health))

    def reporter() -> asyncio.Task | None:
        return next((task for task in asyncio.all_tasks() if task.get_name() == "drain-report"), None)

    async def scenario() -> tuple[float, int, bool]:
        service = Service(config, str(tmp_path))
        service.build()
        await service.start()
        try:
            first = reporter()
            assert first is not None
            first.cancel()  # not by the service's shutdown
            await asyncio.gather(first, return_exceptions=True)
            deadline = time.monotonic() + 5
            while reporter() is None:
                assert time.monotonic() < deadline, "the drain report was not started again"
                await asyncio.sleep(0.02)
            return _errors(service, "drain-report"), await _get(health), service.ready()
        finally:
            await service.shutdown()

    with caplog.at_level(logging.ERROR):
        errors, answer, ready = asyncio.run(scenario())
    assert errors == 1 and answer == 200 and ready
    assert [r.getMessage() for r in caplog.records if r.name == "edgeagent.runtime.supervise"] == [
        "a background task stopped unexpectedly; it starts again"]
