"""A kept-alive connection whose path goes silent does not hold the backlog up.

On a cellular or NAT'd link a connection can vanish without a FIN or a reset: the NAT mapping
changes or the modem attaches again with a new address, and the upstream's packets on the old
connection go nowhere while new connections work. An exporter that kept sending on such a
connection would wait for the kernel to give up on it (minutes). Here a loopback proxy between the
agent and its upstream stops forwarding (and reading) on the connections open at that moment,
closing none of them, and goes on forwarding new ones: every span must reach the upstream within
three times the exporter's `timeout` plus five seconds, over a new connection, each span at most
as often as an at-least-once retry may send it, without the agent spinning or flooding its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from tests.helpers.configs import grpc_exporter, http_exporter, traces_config
from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream

TIMEOUT = 2.0  # the exporter's timeout
BOUND = 3 * TIMEOUT + 5  # seconds from the black hole (or the first send after it) to the last span upstream
RETRY = {"initial_interval": "1s", "max_interval": "5s", "max_elapsed_time": "0s"}
MAX_CPU = 0.5  # of a core, on average, while the agent waits out the silent connection
MAX_LOG_LINES = 60  # what the agent logs from the black hole until the backlog is delivered


@dataclass
class _Pair:
    """One forwarded connection: the agent's side and the upstream's."""
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    pumps: list[asyncio.Task] = field(default_factory=list)
    silent: bool = False


class BlackHoleProxy:
    """Forwards loopback TCP connections from `port` to `target_port`. `black_hole()` silences the
    connections open at that moment: nothing more is forwarded or read on them, in either
    direction, and nothing is closed; connections accepted afterwards are forwarded as before."""

    MAX_CHUNKS = 100_000  # per direction and connection: far above any test's traffic

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.accepted = 0
        self._pairs: list[_Pair] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="black-hole-proxy", daemon=True)
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._serve, "127.0.0.1", self.port))

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        pair = _Pair(writer, upstream_writer)
        self._pairs.append(pair)
        pair.pumps = [asyncio.create_task(self._pump(reader, upstream_writer)),
                      asyncio.create_task(self._pump(upstream_reader, writer))]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            for _ in range(self.MAX_CHUNKS):
                data = await reader.read(1 << 16)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()

    def black_hole(self) -> int:
        """Silences every connection open now; how many there were."""
        return self._run(self._silence())

    async def _silence(self) -> int:
        silenced = 0
        for pair in self._pairs:
            if pair.silent or pair.client.is_closing() or pair.server.is_closing():
                continue
            pair.silent = True
            silenced += 1
            for pump in pair.pumps:
                pump.cancel()
            pair.client.transport.pause_reading()
            pair.server.transport.pause_reading()
        return silenced

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for pair in self._pairs:
                for pump in pair.pumps:
                    pump.cancel()
                pair.client.transport.abort()
                pair.server.transport.abort()

        self._run(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@dataclass
class Setup:
    name: str
    transport: str  # how the agent is sent to
    sink: Upstream | GrpcUpstream
    proxy: BlackHoleProxy


@pytest.fixture(params=["otlp_http", "otlp_grpc"])
def setup(request):
    if request.param == "otlp_http":
        sink: Upstream | GrpcUpstream = Upstream(free_port()).start()
    else:
        sink = GrpcUpstream(free_port()).start()
    proxy = BlackHoleProxy(sink.port)
    yield Setup(request.param, "http" if request.param == "otlp_http" else "grpc", sink, proxy)
    proxy.stop()
    sink.stop()


def _start(agents, tmp_path, setup: Setup, consumers: int):
    queue = {"num_consumers": consumers}
    if setup.name == "otlp_http":
        exporter = {"otlphttp": http_exporter(f"http://127.0.0.1:{setup.proxy.port}", timeout=f"{TIMEOUT:g}s",
                                              retry_on_failure=RETRY, sending_queue=queue)}
    else:
        exporter = {"otlp": grpc_exporter(f"127.0.0.1:{setup.proxy.port}", timeout=f"{TIMEOUT:g}s",
                                          retry_on_failure=RETRY, sending_queue=queue)}
    config = traces_config(tmp_path / "agent.yaml", exporter)
    return agents(["run", "--config", config, "--state-dir", str(tmp_path / "state"),
                   "--set", "service::telemetry::metrics::level=detailed"])  # the client's call durations


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _log_lines(agent) -> int:
    with open(agent.log_path, encoding="utf-8", errors="replace") as handle:
        return sum(1 for _ in handle)


def _attempts(agent) -> dict[str, int]:
    """The agent's requests to its upstream so far, by outcome (its client's duration histograms)."""
    outcomes: dict[str, int] = {}
    for key, value in agent.metrics().items():
        if key.startswith(("http_client_request_duration", "rpc_client_call_duration")) and "_count{" in key:
            status = next((part.split("=", 1)[1].strip('"') for part in key.split("{", 1)[1].rstrip("}").split(",")
                           if part.startswith(("error_type=", "rpc_response_status_code="))), "")
            outcomes[status or "ok"] = outcomes.get(status or "ok", 0) + int(value)
    return outcomes


def _delivered_within(agent, setup: Setup, sent: set[bytes], since: float, cpu: float, lines: int) -> float:
    """Waits for every span in `sent`; the seconds it took from `since`. Checks the agent stayed calm
    and each span came at most twice (once more for an attempt whose answer was lost)."""
    sink = setup.sink
    wait_until(lambda: sink.span_ids() >= sent, timeout=BOUND + 20, interval=0.05,
               message="every span upstream")
    took = time.monotonic() - since
    counts: dict[bytes, int] = {}
    for span in sink.spans():
        counts[span.span_id] = counts.get(span.span_id, 0) + 1
    duplicates = sum(count - 1 for count in counts.values())
    used = _cpu_seconds(agent.process.pid) - cpu
    logged = _log_lines(agent) - lines
    print(f"{setup.name}: delivered after {took:.1f}s, {len(sink.calls)} calls upstream, agent attempts "
          f"{_attempts(agent)}, {duplicates} duplicate spans, {setup.proxy.accepted} connections accepted, "
          f"{used:.2f}s CPU, {logged} log lines")
    assert took <= BOUND, f"the backlog took {took:.1f}s after the black hole (bound {BOUND:g}s)"
    assert max(counts.values()) <= 2, f"a span arrived {max(counts.values())} times"
    assert used <= MAX_CPU * took + 1, f"{used:.1f}s of CPU in {took:.1f}s"
    assert logged <= MAX_LOG_LINES, f"{logged} log lines"
    return took


def test_a_connection_black_holed_while_data_flows_is_given_up_within_the_bound(agents, tmp_path, setup):
    setup.sink.hang = 0.3  # each request is a while at the upstream: the black hole catches some under way
    agent = _start(agents, tmp_path, setup, consumers=4)
    port = agent.grpc_port if setup.transport == "grpc" else agent.http_port
    sent = send_spans(setup.transport, port, 200, service="before", batch=50)
    wait_until(lambda: setup.sink.span_ids() >= sent, timeout=15, message="the first spans upstream")

    cpu, lines = _cpu_seconds(agent.process.pid), _log_lines(agent)
    started = silenced = time.monotonic()
    for index in range(10):  # data goes on flowing for two seconds; the path goes silent in the middle
        if index == 5:
            assert setup.proxy.black_hole() >= 1
            silenced = time.monotonic()
        sent |= send_spans(setup.transport, port, 20, service=f"during-{index}", batch=20)
        time.sleep(max(0.0, started + (index + 1) * 0.2 - time.monotonic()))
    _delivered_within(agent, setup, sent, silenced, cpu, lines)
    assert agent.terminate() == 0


def _send_at_once(transport: str, port: int, senders: int) -> set[bytes]:
    """Spans from `senders` clients at the same time: the agent's consumers send them side by side."""
    with ThreadPoolExecutor(senders) as pool:
        parts = list(pool.map(lambda index: send_spans(transport, port, 100, service=f"before-{index}", batch=50),
                              range(senders)))
    return set().union(*parts)


def test_idle_kept_alive_connections_black_holed_are_given_up_within_the_bound(agents, tmp_path, setup):
    agent = _start(agents, tmp_path, setup, consumers=10)  # otelcol's default: each may keep a connection idle
    port = agent.grpc_port if setup.transport == "grpc" else agent.http_port
    sent = _send_at_once(setup.transport, port, 10)
    wait_until(lambda: setup.sink.span_ids() >= sent, timeout=15, message="the first spans upstream")
    time.sleep(1.0)  # the connections are idle, kept alive
    silenced = setup.proxy.black_hole()
    assert silenced >= 1
    print(f"{setup.name}: {silenced} idle connections silenced")

    cpu, lines = _cpu_seconds(agent.process.pid), _log_lines(agent)
    since = time.monotonic()
    sent |= send_spans(setup.transport, port, 50, service="after")
    _delivered_within(agent, setup, sent, since, cpu, lines)
    assert agent.terminate() == 0
