"""The reachability watch: one connect tells whether an upstream accepts connections, by name or address."""

from __future__ import annotations

import asyncio

from edgeagent.exporters.reach import Watch
from tests.helpers.net import free_port


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
