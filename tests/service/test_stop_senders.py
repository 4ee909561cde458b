"""A stop with deliveries under way to an upstream that does not answer: each sender gives its
deliveries a grace period (then returns their leases), and the senders of all the exporters and
signals take it at the same time, not one after the other.

One after the other, an exporter with three signals took three grace periods, two exporters six:
past systemd's TimeoutStopSec (20 s), which then killed the agent, so that acks still lingering in
the writer were lost and their data sent again after the restart.

Real agent service in-process, real OTLP/HTTP client, an aiohttp upstream on loopback that holds
every request without answering."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from edgeagent.config.loader import load_text
from edgeagent.service.service import Service
from tests.helpers.hostile import spans_request
from tests.helpers.net import free_port
from tests.helpers.otlp_post import post

pytestmark = pytest.mark.e2e  # waits out grace periods of seconds

AGENT = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{receiver}
exporters:
  otlphttp/a:
    endpoint: http://127.0.0.1:{upstream}
    timeout: 60s
  otlphttp/b:
    endpoint: http://127.0.0.1:{upstream}
    timeout: 60s
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp/a, otlphttp/b]
    metrics:
      receivers: [otlp]
      exporters: [otlphttp/a, otlphttp/b]
    logs:
      receivers: [otlp]
      exporters: [otlphttp/a, otlphttp/b]
"""


def _metrics_request() -> bytes:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    metric.gauge.data_points.add(as_double=1.0)
    return request.SerializeToString()


def _logs_request() -> bytes:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hello"
    return request.SerializeToString()


def test_senders_under_way_to_an_upstream_that_does_not_answer_stop_within_one_grace_period(tmp_path):
    held: list[str] = []
    receiver = free_port()

    async def hold(request: web.Request) -> web.Response:
        await request.read()
        held.append(request.path)
        await asyncio.sleep(3600)
        return web.Response(status=200)

    async def scenario() -> float:
        app = web.Application()
        for path in ("/v1/traces", "/v1/metrics", "/v1/logs"):
            app.router.add_post(path, hold)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        upstream = runner.addresses[0][1]
        service = Service(load_text(AGENT.format(receiver=receiver, upstream=upstream)), str(tmp_path / "state"))
        service.build()
        await service.start()
        try:
            for body, path in ((spans_request(3), "/v1/traces"), (_metrics_request(), "/v1/metrics"),
                               (_logs_request(), "/v1/logs")):
                status, _ = await asyncio.to_thread(post, receiver, body, path)
                assert status == 200
            for _ in range(500):  # every sender has a delivery under way
                if len(held) == 6:
                    break
                await asyncio.sleep(0.01)
            assert len(held) == 6, held
        finally:
            started = time.monotonic()
            await service.shutdown()
            stopped = time.monotonic() - started
            await runner.cleanup()
        return stopped

    seconds = asyncio.run(scenario())
    assert seconds < 6, f"the stop took {seconds:.1f}s: the senders' grace periods one after the other"
