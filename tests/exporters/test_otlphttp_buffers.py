"""otlphttp's read_buffer_size, write_buffer_size and profiles_endpoint (otelcol's confighttp client
and otlphttp keys), against a real upstream on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.http1 import wire
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


def test_a_head_larger_than_the_read_buffer_is_read_as_go_reads_it():
    """Go's Transport reads an answer's head line by line whatever its read buffer (ReadBufferSize),
    up to MaxResponseHeaderBytes; a 200 with 24 KiB of headers (a gateway's cookies) came to a client
    with `read_buffer_size: 4096` as an error, and the request the upstream had taken was sent again
    and again, never leaving the queue."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + b"".join(
        b"Set-Cookie: part%d=%s\r\n" % (index, b"v" * 4000) for index in range(6)) + b"\r\n"
    requests = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (block := await wire.read_head(reader)) is not None:
            await reader.readexactly(int(wire.parse_head(block)[1]["Content-Length"]))
            requests.append(block)
            writer.write(head)
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            for read_buffer in (4096, 0):
                exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}",
                                                                       read_buffer_size=read_buffer))
                await exporter.start()
                try:
                    await asyncio.wait_for(exporter.send(Signal.TRACES, b""), 10)
                finally:
                    await exporter.shutdown()
        finally:
            server.close()

    asyncio.run(scenario())
    assert len(requests) == 2
