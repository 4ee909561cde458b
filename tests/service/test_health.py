"""What the health check answers across the service's lifecycle, from a real service on loopback."""

from __future__ import annotations

import asyncio

import aiohttp

from edgeagent.config.loader import load_text
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
