"""A link that carries a few kB/s (a cellular or satellite link) still drains a backlog.

The sender merges a backlog into requests of up to 16,384 spans. Through a link that carries
less than such a request within the exporter's `timeout` every attempt timed out and was tried
again whole, for good: nothing was ever delivered, where otelcol's requests of the size clients
sent them get through. Here a loopback proxy forwards the agent's bytes to the upstream at a
fixed rate (its answers at full speed).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream

RATE = 80_000  # bytes a second, from the agent to the upstream: 640 kbit/s
TIMEOUT = 1.25  # seconds, the exporter's: a merged request of 8,192 spans takes longer at RATE


class Throttle:
    """A loopback TCP proxy that forwards what its clients send at `rate` bytes a second."""

    def __init__(self, port: int, target: int, rate: int):
        self.port, self.target, self.rate = port, target, rate
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        listening = socket.socket()
        # small buffers, as a link's: what the agent sends waits on its side, not in the proxy, so
        # a request it gives up does not go on taking the link's bytes from the next one
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        listening.bind(("127.0.0.1", port))
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, sock=listening, limit=2048), self.loop).result(5)

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, upstream_writer, self.rate), self._pipe(upstream_reader, writer, 0),
                             return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: int) -> None:
        try:
            while data := await reader.read(1024 if rate else 65536):
                writer.write(data)
                await writer.drain()
                if rate:
                    await asyncio.sleep(len(data) / rate)
        finally:
            writer.close()


@pytest.fixture
def slow_upstream():
    upstream = Upstream(free_port()).start()
    throttle = Throttle(free_port(), upstream.port, RATE)
    yield upstream, throttle
    throttle.stop()
    upstream.stop()


def test_a_backlog_merged_into_large_requests_drains_through_a_link_that_carries_little(agents, tmp_path,
                                                                                         slow_upstream):
    upstream, throttle = slow_upstream
    args = ["run", "--state-dir", str(tmp_path / "state"), "--upstream", f"http://127.0.0.1:{throttle.port}",
            "--set", f"exporters::otlphttp::timeout={TIMEOUT}s"]
    agent = agents(args)
    began = time.monotonic()
    sent = send_spans("http", agent.http_port, 8192, batch=512)  # one merged request
    # the agent's view: a request given up at its timeout may still reach the upstream (its bytes
    # were on their way), but only an answer in time lets the agent take it off the queue
    wait_until(lambda: agent.metric("otelcol_exporter_queue_size") == 0, timeout=30,
               message="the backlog delivered through the slow link")
    took = time.monotonic() - began
    assert upstream.span_ids() >= sent
    assert "sending smaller requests" in agent.log()
    assert took < 25, took
    assert agent.terminate() == 0


def test_requests_given_up_on_a_slow_link_do_not_arrive_later_as_duplicates(agents, tmp_path, slow_upstream):
    """A request its timeout ended was closed as a finished one: what the kernel held of it went on over
    the link, and the upstream took each such request in full: 12,288 duplicate spans for 8,192 sent."""
    upstream, throttle = slow_upstream
    args = ["run", "--state-dir", str(tmp_path / "state"), "--upstream", f"http://127.0.0.1:{throttle.port}",
            "--set", f"exporters::otlphttp::timeout={TIMEOUT}s"]
    agent = agents(args)
    sent = send_spans("http", agent.http_port, 8192, batch=512)
    wait_until(lambda: agent.metric("otelcol_exporter_queue_size") == 0, timeout=30,
               message="the backlog delivered through the slow link")
    assert "sending smaller requests" in agent.log()
    counts: dict[bytes, int] = {}
    for span in upstream.spans():
        counts[span.span_id] = counts.get(span.span_id, 0) + 1
    assert set(counts) >= sent
    duplicates = sum(count - 1 for count in counts.values())
    # at most a request that got there in full and whose answer alone came late (a quarter of them)
    assert duplicates < 4096, f"{duplicates} duplicate spans"
    assert agent.terminate() == 0
