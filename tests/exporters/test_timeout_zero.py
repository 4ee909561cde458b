"""An exporter's `timeout: 0` is otelcol's "no timeout" (exporterhelper's TimeoutConfig): accepted,
and an attempt then ends with the upstream's answer, a failed connection, or shutdown.

Real exporters, a real queue and sender, and real upstreams on loopback that answer late or never."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from edgeagent.config.loader import ConfigError, load_text
from edgeagent.configretry import RetryConfig
from edgeagent.exporters.chain import ExportChain
from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.exporters.sender import Sender
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal
from tests.exporters.test_chain import Host, _request, exported
from tests.exporters.test_grpc_client import Recorder
from tests.exporters.test_sender_split import SenderHost

LATE = 0.4  # seconds the upstream takes to answer: longer than any timeout "0" could have meant

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:4318
exporters:
  {kind}:
{settings}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [{kind}]
"""


def _config(kind: str, settings: str):
    text = CONFIG.format(kind=kind, settings="\n".join("    " + line for line in settings.strip().splitlines()))
    return load_text(text, environ={}).exporters[kind].config


@pytest.mark.parametrize(("kind", "settings"), [
    ("otlp_http", "endpoint: http://collector:4318\ntimeout: 0"),
    ("otlp", "endpoint: collector:4317\ntimeout: 0s"),
    ("kafka", "brokers: [kafka:9092]\ntimeout: 0"),
])
def test_an_exporter_timeout_of_zero_is_accepted_as_no_timeout(kind, settings):
    assert _config(kind, settings).timeout == 0


def test_a_negative_exporter_timeout_is_still_refused():
    with pytest.raises(ConfigError) as caught:
        _config("otlp_http", "endpoint: http://collector:4318\ntimeout: -1s")
    assert [path for path, _ in caught.value.errors] == ["exporters::otlp_http::timeout"]


def test_a_grpc_keepalive_timeout_of_zero_is_grpc_gos_twenty_seconds():
    """grpc-go reads a keepalive Timeout of 0 as its default (20 s); 0 itself would close every
    connection at its first keepalive ping."""
    config = _config("otlp", "endpoint: collector:4317\nkeepalive:\n  time: 10s\n  timeout: 0")
    assert config.channel_settings().keepalive_timeout == 20.0


class LateUpstream:
    """OTLP/HTTP on loopback that answers each request after `delay` seconds (never, with None)."""

    def __init__(self, delay: float | None):
        self.delay = delay
        self.arrived = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> LateUpstream:
        app = web.Application()
        app.router.add_post("/v1/traces", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)  # a handler may never end
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived += 1
        await (asyncio.sleep(self.delay) if self.delay is not None else asyncio.Future())
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")


def test_otlphttp_with_timeout_zero_waits_for_a_late_answer():
    async def scenario() -> int:
        async with LateUpstream(LATE) as upstream:
            config = OtlpHttpConfig(endpoint=upstream.url, compression="none", timeout=0)
            exporter = OtlpHttpExporter("otlphttp", config)
            chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=config.timeout)
            delivery = await exported(exporter, chain, [(_request(3), 3)])
        return delivery.sent

    assert asyncio.run(scenario()) == 3


def test_otlp_grpc_with_timeout_zero_sends_no_deadline_and_waits_for_a_late_answer():
    async def scenario() -> int:
        async with Recorder(delay=LATE) as server:  # a deadline sent would end the call on the server too
            config = OtlpGrpcConfig.model_validate({"endpoint": f"127.0.0.1:{server.port}", "tls": {"insecure": True},
                                                    "timeout": 0, "compression": "none"})
            exporter = OtlpGrpcExporter("otlp", config)
            chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=config.timeout)
            delivery = await exported(exporter, chain, [(_request(3), 3)])
        return delivery.sent

    assert asyncio.run(scenario()) == 3


def test_shutdown_ends_an_attempt_without_timeout_and_the_data_stays_queued(tmp_path):
    """An upstream that never answers holds the attempt until shutdown: the grace period ends it and
    the record is still queued for the next run."""
    async def scenario() -> tuple[float, int, int]:
        async with LateUpstream(None) as upstream:
            store = QueueStore(str(tmp_path / "queue"))
            store.open()
            store.start()
            try:
                queue = store.queue("otlphttp/traces", Signal.TRACES)
                await store.put([queue], _request(2), 2, Signal.TRACES)
                exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, timeout=0))
                await exporter.start()
                sender = Sender(exporter, queue, RetryConfig(), 1, None, SenderHost(), timeout=0)
                await sender.start()
                for _ in range(200):
                    if upstream.arrived:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(LATE)  # well past when a timeout "0" would have ended it
                started = time.monotonic()
                await sender.shutdown(grace=0.3)
                took = time.monotonic() - started
                await exporter.shutdown()
                return took, upstream.arrived, queue.entries
            finally:
                await store.close()

    took, arrived, entries = asyncio.run(scenario())
    assert arrived == 1  # one attempt, never ended by a timeout, never retried
    assert took < 2.0
    assert entries == 1
