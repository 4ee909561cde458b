"""What the health check answers across the service's lifecycle, from a real service on loopback."""

from __future__ import annotations

import asyncio

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


def test_a_worker_that_stops_on_an_unexpected_error_stops_the_agent(tmp_path, monkeypatch):
    """A worker that died left the agent up without it: health said unhealthy, but the liveness
    probe and systemd saw a live process, so nothing started it again. Now the agent stops (the
    CLI exits 1), as otelcol stops on a component's fatal error."""
    async def broken_report(status):
        raise RuntimeError("a bug in the drain report")

    monkeypatch.setattr(health_module, "report_drain", broken_report)
    config = load_text(CONFIG.format(receiver=free_port(), health=free_port()))

    async def scenario() -> tuple[str | None, bool]:
        service = Service(config, str(tmp_path))
        stopped = asyncio.Event()
        service.on_fatal = stopped.set
        service.build()
        await service.start()
        try:
            await asyncio.wait_for(stopped.wait(), timeout=5)
            return service.fatal, service.ready()
        finally:
            await service.shutdown()

    fatal, ready = asyncio.run(scenario())
    assert fatal is not None and "drain-report" in fatal and "a bug in the drain report" in fatal
    assert not ready
