"""An OTLP/gRPC upstream that ends its connections on purpose, as gRPC servers behind load
balancers do: `max_connection_age` (a GOAWAY three times a second here) and a rolling restart
(the collector stopped gracefully and a new one started on the same port).

grpc-go's client (otelcol's exporter) takes both in its stride: a call the GOAWAY names as not
processed goes out again at once on a new connection, not counted as a failure. So must the
agent's: no delivery held up, no attempt failed, no upstream reported unreachable, no warning.

The real agent sends to a real otelcol (or to a second agent), which hands what it receives to a
recording upstream at once (no queue), so the upstream's arrival times are the collector's.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.agent import AgentProcess
from tests.helpers.configs import grpc_exporter, http_exporter, traces_config
from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

SPANS_PER_REQUEST = 10
# a connection ends about three times a second: six seconds see some eighteen GOAWAYs, as many as
# twenty seconds of a 1 s max_connection_age (a GOAWAY meets a call on its way rarely)
KEEPALIVE = {"server_parameters": {"max_connection_age": "300ms", "max_connection_age_grace": "1s"}}
# otelcol's default backoff: a call failed by a GOAWAY and retried after it holds its data for 5 s
RETRY = {"initial_interval": "5s", "randomization_factor": 0, "max_elapsed_time": "0s"}


def collector_config(port: int, upstream: Upstream, max_age: bool) -> dict:
    grpc: dict = {"endpoint": f"127.0.0.1:{port}"}
    if max_age:
        grpc["keepalive"] = KEEPALIVE
    return {"receivers": {"otlp": {"protocols": {"grpc": grpc}}},
            "exporters": {"otlphttp": {"endpoint": upstream.url, "compression": "none",
                                       "sending_queue": {"enabled": False}, "retry_on_failure": {"enabled": False}}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}}}}


def start_agent(agents, tmp_path, port: int) -> AgentProcess:
    config = traces_config(tmp_path / "agent.yaml", {"otlp": grpc_exporter(
        f"127.0.0.1:{port}", retry_on_failure=RETRY, sending_queue={"num_consumers": 4})})
    # detailed: the gRPC client's calls are counted by status; debug: each retry is logged
    return agents(["run", "--config", config, "--state-dir", str(tmp_path / "state"),
                   "--set", "service::telemetry::metrics::level=detailed",
                   "--set", "service::telemetry::logs::level=debug"])


@dataclass
class Traffic:
    """`clients` threads, each posting requests of SPANS_PER_REQUEST spans to the agent one after the
    other for `seconds`; `sent` maps each span id to when the agent took it."""

    port: int
    seconds: float
    upstream_port: int  # whose connections from loopback are noted (`connections`)
    clients: int = 4
    sent: dict[bytes, float] = field(default_factory=dict)
    refused: int = 0
    connections: set[int] = field(default_factory=set)  # local ports of the connections seen to upstream_port

    def start(self) -> Traffic:
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(client,), daemon=True)
                         for client in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> None:
        for thread in self._threads:
            thread.join(self.seconds + 30)

    def _run(self, client: int) -> None:
        end = time.monotonic() + self.seconds
        number = client << 32  # each client's span ids of its own
        while time.monotonic() < end:
            request = ExportTraceServiceRequest()
            spans = request.resource_spans.add().scope_spans.add().spans
            ids = [(number := number + 1).to_bytes(8, "big") for _ in range(SPANS_PER_REQUEST)]
            for span_id in ids:
                spans.add(name="steady", trace_id=b"\x05" * 16, span_id=span_id)
            status, _ = post(self.port, request)
            taken = time.monotonic()
            seen = connections_to(self.upstream_port)
            with self._lock:
                self.refused += status != 200
                self.sent.update((span_id, taken) for span_id in ids if status == 200)
                self.connections |= seen


def connections_to(port: int) -> set[int]:
    """The local ports of the established IPv4 TCP connections to port `port` (Linux's /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
            found.add(int(local.rsplit(":", 1)[1], 16))
    return found


def arrivals(upstream: Upstream) -> dict[bytes, list[float]]:
    """When each span id reached the upstream, every time it did (it answers every request 200: its
    `calls` and `requests` pair up)."""
    seen: dict[bytes, list[float]] = {}
    for call, received in zip(list(upstream.calls), list(upstream.requests), strict=False):
        for rs in received.message.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    seen.setdefault(span.span_id, []).append(call.at)
    return seen


@dataclass
class Outcome:
    delays: dict[bytes, float]  # from the agent taking a span to its first arrival upstream
    duplicates: int
    failed_attempts: float  # calls that did not end OK
    retries: list[str]  # why each attempt followed by a backoff wait failed
    went_offline: int
    warnings: list[str]
    failed_spans: float

    def worst(self) -> float:
        return max(self.delays.values())


def outcome(agent: AgentProcess, upstream: Upstream, traffic: Traffic) -> Outcome:
    wait_until(lambda: upstream.span_ids() >= set(traffic.sent), timeout=20, interval=0.1,
               message="every span upstream")
    seen = arrivals(upstream)
    attempts = sum(value for key, value in agent.metrics().items()
                   if key.startswith("rpc_client_call_duration_count") and 'rpc_response_status_code="OK"' not in key)
    log = [json.loads(line) for line in Path(agent.log_path).read_text(errors="replace").splitlines()
           if line.startswith("{")]
    warnings = [entry["msg"] for entry in log if entry.get("level") in ("warning", "error")]
    return Outcome(delays={span: min(seen[span]) - taken for span, taken in traffic.sent.items()},
                   duplicates=sum(len(times) - 1 for times in seen.values()),
                   failed_attempts=attempts,
                   retries=[entry["error"] for entry in log if entry["msg"] == "send failed; retrying"],
                   went_offline=sum(entry["msg"].startswith("upstream is unreachable") for entry in log),
                   warnings=warnings, failed_spans=agent.metric("otelcol_exporter_send_failed_spans", exporter="otlp"))


def report(name: str, result: Outcome) -> str:
    return (f"{name}: worst delay {result.worst():.2f}s, {result.duplicates} duplicates, "
            f"{result.failed_attempts:g} failed attempts, {len(result.retries)} retries, "
            f"{result.went_offline} offline transitions, {result.failed_spans:g} failed spans, "
            f"warnings: {result.warnings[:3]}, retried after: {result.retries[:3]}")


def hub_config(path: Path, upstream: Upstream) -> str:
    """A second agent as the upstream: our own OTLP/gRPC receiver with KEEPALIVE (a single GOAWAY
    naming the last call it took, as nginx sends too), forwarding to `upstream` at once."""
    path.write_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"grpc": {"keepalive": KEEPALIVE}, "http": {}}}},
        "exporters": {"otlphttp": http_exporter(upstream.url, sending_queue={"enabled": False})},
        "extensions": {"health_check": {}},
        "service": {"extensions": ["health_check"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}}}}))
    return str(path)


def steady(agent: AgentProcess, upstream: Upstream, port: int, name: str) -> None:
    """Ten seconds of traffic through an upstream on `port` that ends each connection after KEEPALIVE's age."""
    traffic = Traffic(agent.http_port, 6.0, port).start()
    traffic.join()
    result = outcome(agent, upstream, traffic)
    print(report(name, result), f"over {len(traffic.connections)} connections")
    assert len(traffic.connections) >= 15, "the upstream ended the agent's connections a few times a second"
    assert traffic.refused == 0
    assert len(traffic.sent) > 1000
    assert result.worst() < 1.0, report(name, result)
    assert result.duplicates <= 2 * SPANS_PER_REQUEST, report(name, result)
    assert result.failed_attempts == 0 and result.retries == [], report(name, result)
    assert result.went_offline == 0 and result.warnings == [], report(name, result)
    assert result.failed_spans == 0


def test_a_collector_ending_its_connections_by_age_holds_up_no_delivery(agents, otelcol, tmp_path):
    """grpc-go's server says GOAWAY twice: first naming every stream, with a PING, then, once the PING
    is answered, the last stream it took."""
    upstream = Upstream(free_port()).start()
    try:
        port = free_port()
        otelcol(collector_config(port, upstream, max_age=True))
        steady(start_agent(agents, tmp_path, port), upstream, port, "otelcol, max_connection_age")
    finally:
        upstream.stop()


def test_an_upstream_saying_a_single_goaway_by_age_holds_up_no_delivery(agents, tmp_path):
    """A GOAWAY naming the last call the server took: a call the client sent meanwhile was not
    processed, and goes out again at once on a new connection."""
    upstream = Upstream(free_port()).start()
    try:
        hub = agents(["run", "--config", hub_config(tmp_path / "hub.yaml", upstream),
                      "--state-dir", str(tmp_path / "hub")])
        steady(start_agent(agents, tmp_path, hub.grpc_port), upstream, hub.grpc_port,
               "edgeagent, max_connection_age")
    finally:
        upstream.stop()


def test_a_rolling_restart_of_the_collector_loses_nothing_and_is_used_at_once(agents, otelcol, tmp_path):
    upstream = Upstream(free_port()).start()
    try:
        port = free_port()
        first = otelcol(collector_config(port, upstream, max_age=False))
        agent = start_agent(agents, tmp_path, port)
        traffic = Traffic(agent.http_port, 6.0, port).start()
        time.sleep(2.5)
        first.stop()  # SIGTERM: the receiver's gRPC server stops gracefully (GOAWAY, then closes)
        stopped = time.monotonic()
        time.sleep(1.0)
        otelcol(collector_config(port, upstream, max_age=False))  # returns once the new one is healthy
        listening = time.monotonic()
        traffic.join()
        result = outcome(agent, upstream, traffic)
        gap = [span for span, taken in traffic.sent.items() if stopped <= taken <= listening]
        assert gap, "spans were sent while no collector listened"
        back = min(min(arrivals(upstream)[span]) for span in gap) - listening
        print(report("rolling restart", result), f"(down {listening - stopped:.2f}s, back after {back:.2f}s)")
        assert back < 2.0, f"the first span sent while the collector was down arrived {back:.2f}s after it listened"
        after = {span: delay for span, delay in result.delays.items() if traffic.sent[span] > listening + 2.0}
        assert after and max(after.values()) < 1.0, report("rolling restart", result)
        assert result.duplicates <= 2 * SPANS_PER_REQUEST, report("rolling restart", result)
        assert result.failed_spans == 0
        # what failed was connecting while nothing listened: never a call the stopping collector ended
        assert all("cannot connect" in error for error in result.retries), report("rolling restart", result)
    finally:
        upstream.stop()
