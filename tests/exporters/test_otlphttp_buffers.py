"""otlphttp's read_buffer_size, write_buffer_size and profiles_endpoint (otelcol's confighttp client
and otlphttp keys), against a real upstream on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.signals import Signal
from tests.helpers.net import free_port
from tests.helpers.upstream import Upstream


@pytest.fixture
def upstream():
    server = Upstream(free_port()).start()
    yield server
    server.stop()


async def _send_and_inspect(config: OtlpHttpConfig) -> tuple[list[int], int]:
    """Send one request; the SO_SNDBUF of the connections it kept open, and the client's read buffer."""
    exporter = OtlpHttpExporter("otlphttp", config)
    await exporter.start()
    try:
        await exporter.send(Signal.TRACES, b"")
        client = exporter._client
        assert client is not None
        sizes = [connection.writer.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                 for connection in client.pool.idle_connections()]
        return sizes, client.settings.read_buffer
    finally:
        await exporter.shutdown()


def test_write_buffer_size_sizes_each_connections_send_buffer(upstream):
    sizes, _ = asyncio.run(_send_and_inspect(OtlpHttpConfig(endpoint=upstream.url, write_buffer_size=65536)))
    assert sizes and all(size == 2 * 65536 for size in sizes)  # Linux doubles it for its bookkeeping
    assert len(upstream.received("traces")) == 1


def test_read_buffer_size_is_the_clients_read_buffer_and_zero_keeps_the_defaults(upstream):
    _, read_buffer = asyncio.run(_send_and_inspect(OtlpHttpConfig(endpoint=upstream.url, read_buffer_size=8192)))
    assert read_buffer == 8192
    sizes, read_buffer = asyncio.run(_send_and_inspect(OtlpHttpConfig(endpoint=upstream.url, read_buffer_size=-1,
                                                                       write_buffer_size=0)))
    assert read_buffer == 2**16  # otelcol ignores 0 and less as well
    assert sizes and all(size != 2 * 65536 for size in sizes)


def test_profiles_endpoint_is_accepted_and_said_to_be_unused():
    config = OtlpHttpConfig(endpoint="http://collector:4318", profiles_endpoint="http://collector:4318/v1/profiles")
    assert any("profiles_endpoint is not used" in warning for warning in config.config_warnings())
    assert all(config.url(signal) != config.profiles_endpoint for signal in Signal)
    with pytest.raises(ValueError, match="http:// or https://"):
        OtlpHttpConfig(endpoint="http://collector:4318", profiles_endpoint="collector:4318")
