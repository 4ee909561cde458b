"""The reachability watch: one connect tells whether an upstream accepts connections, by name or address;
the watch of a running agent outlives a cancellation from elsewhere."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from edgeagent.config.loader import load_text
from edgeagent.exporters.reach import Watch
from edgeagent.service.service import Service
from tests.helpers.hostile import spans_request
from tests.helpers.net import free_port
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream


async def _nothing() -> tuple[bool, float]:
    return False, 0.0


def test_accepts_by_address_and_by_name_and_not_where_nothing_listens_or_the_name_is_unknown():
    async def scenario() -> None:
        port = free_port()
        assert not await Watch([("127.0.0.1", port)], _nothing, "x").accepts()
        server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", port)
        try:
            assert await Watch([("127.0.0.1", port)], _nothing, "x").accepts()
            assert await Watch([("localhost", port)], _nothing, "x").accepts()
            # any address of several will do, tried in turn
            assert await Watch([("127.0.0.1", free_port()), ("127.0.0.1", port)], _nothing, "x").accepts()
            assert not await Watch([("upstream.invalid", port)], _nothing, "x").accepts()
        finally:
            server.close()
    asyncio.run(scenario())


def test_an_http_exporter_behind_a_proxy_is_watched_at_the_proxy_which_is_where_it_connects(monkeypatch):
    from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter

    def addresses(settings: dict) -> list[tuple[str, int]]:
        return OtlpHttpExporter("otlphttp", OtlpHttpConfig.model_validate(settings)).upstream_addresses()

    assert addresses({"endpoint": "https://collector.example:4318"}) == [("collector.example", 4318)]
    assert addresses({"endpoint": "https://collector.example:4318", "proxy_url": "http://proxy.example:3128"}) \
        == [("proxy.example", 3128)]
    monkeypatch.setenv("HTTPS_PROXY", "proxy.example:8080")
    assert addresses({"endpoint": "https://collector.example"}) == [("proxy.example", 8080)]
    assert addresses({"endpoint": "https://127.0.0.1:4318"}) == [("127.0.0.1", 4318)]  # loopback is never proxied


AGENT = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{receiver}
exporters:
  otlphttp:
    endpoint: {upstream}
    retry_on_failure:
      initial_interval: 30s
      max_interval: 30s
      randomization_factor: 0
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"""


@pytest.mark.e2e  # takes seconds: the restarted watch's first connect
def test_a_watch_cancelled_from_elsewhere_starts_again_so_a_returning_upstream_still_cuts_the_backoff_short(
        tmp_path, caplog):
    """The watch ended by anything but its exporter (a cancellation, an error its body let out) stayed
    dead until the next failed attempt, a whole backoff later: an upstream back meanwhile waited that
    backoff out, and nothing counted it. Now it starts again, counted and logged once."""
    upstream = Upstream(free_port()).start()
    upstream.refuse()  # nothing accepts connections: the exporter's attempts fail unanswered
    receiver = free_port()
    config = load_text(AGENT.format(receiver=receiver, upstream=upstream.url))

    def watch() -> asyncio.Task | None:
        return next((task for task in asyncio.all_tasks() if task.get_name() == "reach:otlphttp"), None)

    async def until(predicate, what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)

    async def scenario() -> tuple[float, float, bool]:
        service = Service(config, str(tmp_path))
        service.build()
        await service.start()
        try:
            status, _ = await asyncio.to_thread(post, receiver, spans_request(3))
            assert status == 200
            await until(lambda: watch() is not None, "the first refused attempt started no watch")
            first = watch()
            first.cancel()  # not by its exporter
            await asyncio.gather(first, return_exceptions=True)
            upstream.listen()
            started = time.monotonic()
            await until(lambda: len(upstream.spans()) == 3, "the upstream back waited out the 30 s backoff")
            waited = time.monotonic() - started
            return waited, service.telemetry.metrics.counters["edgeagent_background_errors"].get(
                "reach:otlphttp"), service.ready()
        finally:
            await service.shutdown()

    try:
        with caplog.at_level(logging.ERROR):
            waited, errors, ready = asyncio.run(scenario())
    finally:
        upstream.stop()
    assert waited < 4 and errors == 1 and ready
    assert [r.getMessage() for r in caplog.records if r.name == "edgeagent.runtime.supervise"] == [
        "a background task stopped unexpectedly; it starts again"]
