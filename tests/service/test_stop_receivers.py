"""A stop while several receivers each hold a client that is slow to send its request: each
receiver gives requests in progress a grace period, and the receivers take it at the same time,
not one after the other; processors and exporters still stop after every receiver.

One after the other, three receivers took three grace periods, and each of the up to 5 s a
component is allowed: past systemd's TimeoutStopSec (20 s) with a few more.

Real agent service in-process; real TCP clients on loopback that send a request's head and part
of its body, then nothing more."""

from __future__ import annotations

import asyncio
import time

import h2.config
import h2.connection
import pytest

from edgeagent.config.loader import load_text
from edgeagent.receivers.otlp_http import SHUTDOWN_GRACE
from edgeagent.service.service import Service
from tests.helpers.net import free_port

pytestmark = pytest.mark.e2e  # waits out grace periods of seconds

RECEIVERS = 3

AGENT = """
receivers:
{receivers}
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{upstream}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [{names}]
      exporters: [otlphttp]
"""

RECEIVER = """  otlp/{index}:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
"""


async def _slow_client(port: int) -> asyncio.StreamWriter:
    """A request whose body is promised at 1000 bytes, of which 10 are sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
                 b"Content-Length: 1000\r\n\r\n" + b"\x0a" * 10)
    await writer.drain()
    return writer


async def _slow_grpc_client(port: int) -> asyncio.StreamWriter:
    """An Export call whose headers are sent, and then nothing: a call in flight."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    connection.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                                (":path", "/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
                                ("content-type", "application/grpc"), ("te", "trailers")])
    writer.write(connection.data_to_send())
    await writer.drain()
    return writer


def test_receivers_each_holding_a_slow_client_stop_within_one_grace_period(tmp_path):
    ports = [free_port() for _ in range(RECEIVERS)]
    receivers = "".join(RECEIVER.format(index=index, port=port) for index, port in enumerate(ports))
    names = ", ".join(f"otlp/{index}" for index in range(RECEIVERS))
    config = load_text(AGENT.format(receivers=receivers, names=names, upstream=free_port()))

    async def scenario() -> float:
        service = Service(config, str(tmp_path / "state"))
        service.build()
        await service.start()
        clients: list[asyncio.StreamWriter] = []
        try:
            clients = [await _slow_client(port) for port in ports]
            await asyncio.sleep(0.3)  # every receiver is reading its client's body
        finally:
            started = time.monotonic()
            await service.shutdown()
            stopped = time.monotonic() - started
            for client in clients:
                client.close()
        return stopped

    seconds = asyncio.run(scenario())
    print(f"stop took {seconds:.2f}s with {RECEIVERS} receivers each holding a slow client")
    assert seconds < SHUTDOWN_GRACE * 2, f"the stop took {seconds:.1f}s: the receivers one after the other"


def test_a_receiver_holding_a_slow_client_on_each_protocol_stops_within_one_grace_period(tmp_path):
    grpc, http = free_port(), free_port()
    receivers = f"""  otlp/0:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http:
        endpoint: 127.0.0.1:{http}
"""
    config = load_text(AGENT.format(receivers=receivers, names="otlp/0", upstream=free_port()))

    async def scenario() -> float:
        service = Service(config, str(tmp_path / "state"))
        service.build()
        await service.start()
        clients: list[asyncio.StreamWriter] = []
        try:
            clients = [await _slow_grpc_client(grpc), await _slow_client(http)]
            await asyncio.sleep(0.3)  # a call in flight on each server
        finally:
            started = time.monotonic()
            await service.shutdown()
            stopped = time.monotonic() - started
            for client in clients:
                client.close()
        return stopped

    seconds = asyncio.run(scenario())
    print(f"stop took {seconds:.2f}s with a slow client on each protocol of one receiver")
    assert seconds < SHUTDOWN_GRACE * 1.5, f"the stop took {seconds:.1f}s: the protocols one after the other"
