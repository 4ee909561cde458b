"""The agent's /metrics server: what `service::telemetry::metrics::level` serves, over real HTTP."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from edgeagent.config.service import MetricsConfig
from edgeagent.instrumentation import http_server_timer
from edgeagent.service.telemetry import Telemetry
from tests.helpers.net import free_port

# what otelcol 0.165 drops below level detailed (service/internal/metricviews): its HTTP and gRPC
# instrumentation, the processors' durations and the sizes of what enters a sending queue
DETAILED_ONLY = ("http_server_request_duration", "otelcol_exporter_enqueue_size")


def _served(level: str) -> str:
    async def scenario() -> str:
        telemetry = Telemetry()
        http_server_timer(telemetry.metrics, "127.0.0.1", 4318, "http")
        telemetry.metrics.histogram("otelcol_exporter_enqueue_size", "sizes", ("exporter",)).observe(3, "debug")
        port = free_port()
        await telemetry.serve(MetricsConfig.model_validate(
            {"level": level, "readers": [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": port}}}}]}))
        try:
            return await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        finally:
            await telemetry.stop_serving()
    return asyncio.run(scenario())


@pytest.mark.parametrize("level", ["basic", "normal"])
def test_below_detailed_the_series_otelcol_drops_are_not_served(level):
    text = _served(level)
    assert "otelcol_process_uptime" in text
    assert [name for name in DETAILED_ONLY if f"# TYPE {name} " in text] == []


def test_detailed_serves_them():
    text = _served("detailed")
    assert [name for name in DETAILED_ONLY if f"# TYPE {name} " not in text] == []


def test_with_resource_constant_labels_puts_the_resource_attributes_it_names_on_every_series():
    """otelcol 0.165's prometheus reader key; it was refused, so such a config did not run."""
    async def scenario() -> str:
        telemetry = Telemetry()
        telemetry.describe({"deployment.environment": "prod"})
        port = free_port()
        prometheus = {"host": "127.0.0.1", "port": port,
                      "with_resource_constant_labels": {"included": ["deployment.environment"]}}
        reader = {"pull": {"exporter": {"prometheus": prometheus}}}
        await telemetry.serve(MetricsConfig.model_validate({"readers": [reader]}))
        try:
            return await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        finally:
            await telemetry.stop_serving()

    text = asyncio.run(scenario())
    uptime = next(line for line in text.splitlines() if line.startswith("otelcol_process_uptime{"))
    assert uptime.startswith('otelcol_process_uptime{deployment_environment="prod"} ')
