"""An otlphttp exporter whose signals go to different backends (traces_endpoint, logs_endpoint, as
with Tempo and Loki): what one backend answers must not hold back the signals of the other.

The exporter's consumers share what they learn about an upstream (edgeagent.exporters.link): a
Retry-After pauses them all, connection failures take them offline to one probe at a time. That is
right for signals sent to one host, and wrong for hosts of their own: a logs backend answering 429
with Retry-After paused the traces sent to a healthy traces backend as long as it asked, and one
that was down throttled them to a probe per backoff, while otelcol sends each signal on its own.

Real agent service in-process, real OTLP/HTTP clients, two aiohttp backends on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from edgeagent.config.loader import load_text
from edgeagent.service.service import Service
from tests.helpers.hostile import spans_request
from tests.helpers.net import free_port
from tests.helpers.otlp_post import post

pytestmark = pytest.mark.e2e  # waits out a Retry-After and an outage of seconds

AGENT = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{receiver}
exporters:
  otlphttp:
    traces_endpoint: http://127.0.0.1:{traces}/v1/traces
    logs_endpoint: {logs}
    retry_on_failure:
      initial_interval: 5s
      max_interval: 30s
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
    logs:
      receivers: [otlp]
      exporters: [otlphttp]
"""


def _logs_request() -> bytes:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hello"
    return request.SerializeToString()


class Backends:
    """Two servers: traces answered 200; logs answered 429 with Retry-After: 60, counted."""

    def __init__(self) -> None:
        self.traces = 0
        self.logs_attempts = 0
        self._runners: list[web.AppRunner] = []
        self.traces_port = self.logs_port = 0

    async def start(self) -> None:
        self.traces_port = await self._serve("/v1/traces", self._traces)
        self.logs_port = await self._serve("/v1/logs", self._logs)

    async def _serve(self, path: str, handler) -> int:
        app = web.Application()
        app.router.add_post(path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runners.append(runner)
        return int(runner.addresses[0][1])

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        await request.read()
        self.traces += 1
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    async def _logs(self, request: web.Request) -> web.Response:
        await request.read()
        self.logs_attempts += 1
        return web.Response(status=429, headers={"Retry-After": "60"}, text="slow down")


async def _until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def _run(tmp_path, logs_endpoint) -> tuple[bool, float, int]:
    backends = Backends()
    receiver = free_port()

    async def scenario() -> tuple[bool, float, int]:
        await backends.start()
        logs = logs_endpoint(backends.logs_port)
        config = load_text(AGENT.format(receiver=receiver, traces=backends.traces_port, logs=logs))
        service = Service(config, str(tmp_path / "state"))
        service.build()
        await service.start()
        try:
            for _ in range(4):  # the logs backend refuses them: the link learns from it
                status, _ = await asyncio.to_thread(post, receiver, _logs_request(), "/v1/logs")
                assert status == 200
            await asyncio.sleep(1.5)
            started = time.monotonic()
            for _ in range(5):
                status, _ = await asyncio.to_thread(post, receiver, spans_request(3))
                assert status == 200
            delivered = await _until(lambda: backends.traces >= 5, 4.0)
            return delivered, time.monotonic() - started, backends.logs_attempts
        finally:
            await service.shutdown()
            await backends.stop()

    return asyncio.run(scenario())


def test_a_logs_backend_asking_to_wait_does_not_hold_back_traces_sent_elsewhere(tmp_path):
    delivered, seconds, logs_attempts = _run(tmp_path, lambda port: f"http://127.0.0.1:{port}/v1/logs")
    assert logs_attempts > 0
    assert delivered, f"traces to a healthy backend waited for the logs backend's Retry-After ({seconds:.1f}s)"


def test_a_logs_backend_that_is_down_does_not_throttle_traces_sent_elsewhere(tmp_path):
    delivered, seconds, _ = _run(tmp_path, lambda port: f"http://127.0.0.1:{free_port()}/v1/logs")
    assert delivered, f"traces to a healthy backend were throttled by a logs backend that is down ({seconds:.1f}s)"
