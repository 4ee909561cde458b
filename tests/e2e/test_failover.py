"""The failover connector in the real process: backup while the primary fails, then back, nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream, _decompress

CONFIG = os.path.join(os.path.dirname(__file__), "..", "testdata", "e2e", "failover.yaml")
SWITCHED_DOWN = "failover switched to a lower priority level"
SWITCHED_UP = "failover returned to a higher priority level"
# long enough that waiting out the backoff is seen: the first retry comes 20 s after a failure
SLOW_RETRY = {"initial_interval": "20s", "max_interval": "60s", "randomization_factor": 0}


def _env(primary_port: int, backup: Upstream, audit: Upstream) -> dict[str, str]:
    return {"PRIMARY": f"http://127.0.0.1:{primary_port}", "BACKUP": backup.url, "AUDIT": audit.url}


def _start(agents, tmp_path, primary_port: int, backup: Upstream, audit: Upstream):
    return agents(["run", "--config", CONFIG, "--state-dir", str(tmp_path / "state")],
                  env=_env(primary_port, backup, audit))


def _status(tmp_path, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "edgeagent", "status", "--config", CONFIG, "--state-dir", str(tmp_path / "state")]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env={**os.environ, **env}).stdout


def _active_level(agent) -> float:
    return agent.metric("edgeagent_failover_active_level", connector="failover")


def _log_count(agent, text: str) -> int:
    with open(agent.log_path, encoding="utf-8", errors="replace") as handle:
        return handle.read().count(text)


def test_primary_outage_fails_over_to_backup_and_traffic_returns_without_loss(agents, upstream, tmp_path):
    backup, audit = Upstream(free_port()).start(), Upstream(free_port()).start()
    returned = None
    try:
        agent = _start(agents, tmp_path, upstream.port, backup, audit)
        before = send_spans("http", agent.http_port, 300)
        wait_until(lambda: upstream.span_ids() >= before, timeout=30, message="spans at the primary")
        assert not backup.span_ids()

        upstream.stop()  # the primary goes away: connections are refused
        during = send_spans("grpc", agent.grpc_port, 300)
        wait_until(lambda: backup.span_ids() >= during, timeout=30, message="spans at the backup")
        # the level switches once the backup's answer is read, a moment after it holds the spans
        wait_until(lambda: _active_level(agent) == 1, timeout=10, message="the backup level active")
        details = agent.health()[1]["connectors"]["failover"]
        assert details["active_level"] == 1 and details["active_pipelines"] == ["traces/backup"]
        assert agent.health()[1]["exporters"]["otlphttp/primary"]["upstream"] == "offline"
        assert "connector failover: level 1 (traces/backup)" in _status(tmp_path, _env(upstream.port, backup, audit))

        returned = Upstream(upstream.port).start()  # the primary is back on the same port
        recovering: set[bytes] = set()
        deadline = time.monotonic() + 30
        while _active_level(agent) != 0 and time.monotonic() < deadline:  # traffic carries the retry
            recovering |= send_spans("http", agent.http_port, 10)
            time.sleep(0.2)
        assert _active_level(agent) == 0, agent.log()
        after = send_spans("http", agent.http_port, 300)
        wait_until(lambda: returned.span_ids() >= after, timeout=30, message="spans at the primary again")
        assert not after & backup.span_ids()

        sent = before | during | recovering | after
        delivered = lambda: upstream.span_ids() | returned.span_ids() | backup.span_ids()  # noqa: E731
        wait_until(lambda: delivered() >= sent, timeout=30, message="every span at the primary or the backup")
        assert delivered() == sent
        # fan-out: the audit exporter in the same pipeline as the connector got everything
        wait_until(lambda: audit.span_ids() >= sent, timeout=30, message="every span at the audit upstream")
        assert audit.span_ids() == sent
        wait_until(lambda: agent.metric("edgeagent_queue_items", exporter="failover") == 0, timeout=10)
        assert _log_count(agent, SWITCHED_DOWN) == 1 and _log_count(agent, SWITCHED_UP) == 1, agent.log()
        assert agent.terminate() == 0
    finally:
        for server in (backup, audit, returned):
            if server is not None:
                server.stop()


def test_with_every_level_down_data_stays_queued_until_a_level_returns(agents, tmp_path):
    primary_port, backup_port = free_port(), free_port()
    audit = Upstream(free_port()).start()
    backup = Upstream(backup_port)
    try:
        agent = _start(agents, tmp_path, primary_port, backup, audit)
        sent = send_spans("http", agent.http_port, 500)
        assert agent.metric("otelcol_receiver_accepted_spans") == 500
        wait_until(lambda: agent.metric("otelcol_exporter_send_failed_spans", exporter="otlphttp/backup") > 0,
                   timeout=30, message="a failed attempt at every level")
        assert agent.metric("edgeagent_queue_items", exporter="failover") == 500

        backup.start()
        wait_until(lambda: backup.span_ids() >= sent, timeout=30, message="the backlog at the backup")
        assert backup.span_ids() == sent
        wait_until(lambda: _active_level(agent) == 1, timeout=10, message="the backup level active")
        wait_until(lambda: agent.metric("edgeagent_queue_items", exporter="failover") == 0, timeout=10)
        assert agent.terminate() == 0
    finally:
        backup.stop()
        audit.stop()


def _slow_retry_config(tmp_path) -> str:
    """failover.yaml with the connector's sender retrying 20 s after a failure, and no audit exporter."""
    with open(CONFIG, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["connectors"]["failover"]["retry_on_failure"] = SLOW_RETRY
    del config["exporters"]["otlphttp/audit"]
    config["service"]["pipelines"]["traces"]["exporters"] = ["failover"]
    path = tmp_path / "failover-slow-retry.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("returning", ["primary", "backup"])
def test_with_every_level_refusing_the_backlog_goes_within_seconds_of_any_level_listening(agents, tmp_path,
                                                                                          returning):
    ports = {"primary": free_port(), "backup": free_port()}  # nothing listens: connections are refused
    env = {"PRIMARY": f"http://127.0.0.1:{ports['primary']}", "BACKUP": f"http://127.0.0.1:{ports['backup']}"}
    agent = agents(["run", "--config", _slow_retry_config(tmp_path), "--state-dir", str(tmp_path / "state")],
                   env=env)
    sent: set[bytes] = set()
    for _ in range(3):  # three requests, three refused sends: the connector's upstream is offline
        sent |= send_spans("http", agent.http_port, 20)
        time.sleep(0.1)  # past the batch timeout: one request each
    wait_until(lambda: agent.metrics().get('edgeagent_upstream_online{exporter="failover"}') == 0.0, timeout=10,
               interval=0.1, message="the connector's upstream offline")
    offline = agent.health()[1]["connectors"]["failover"]
    upstream = Upstream(ports[returning]).start()
    listening = time.monotonic()
    try:
        wait_until(lambda: upstream.spans(), timeout=10, interval=0.05, message="the backlog starts draining")
        first = min(attempt.at for attempt in upstream.calls if attempt.status == 200)
        assert first - listening < 2.5, "sent after the backoff, not when the level listened"
        wait_until(lambda: upstream.span_ids() >= sent, timeout=10, message="the whole backlog delivered")
        assert offline["upstream"] == "offline"
        wait_until(lambda: agent.health()[1]["connectors"]["failover"]["upstream"] == "online", timeout=5,
                   message="the connector's upstream online in /health")
        assert agent.metrics().get('edgeagent_upstream_online{exporter="failover"}') == 1.0
    finally:
        upstream.stop()


class _FirstPartOnly(Upstream):
    """Takes at most `max_items` spans at a time (413 above that); while `failing`, answers 503 to
    every such request after the first, so that a request is delivered in part."""

    failing = True
    taken = 0

    def _handler(self, signal: str):
        handle = super()._handler(signal)

        async def first_part_only(request: web.Request) -> web.Response:
            body = _decompress(await request.read(), request.headers.get("Content-Encoding", ""))
            spans = len(ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans)
            with self._lock:
                small = self.max_items is not None and spans <= self.max_items
                refuse, self.taken = small and self.failing and self.taken > 0, self.taken + small
            if refuse:
                return web.Response(status=503, text="only the first part is taken")
            return await handle(request)

        return first_part_only


def test_a_request_the_primary_took_in_part_is_not_sent_there_again_in_full(agents, tmp_path):
    """The primary's chain halved a request after a 413 and took the first half; the second half
    failed, and so did the backup. The connector's sender retried the whole request, and the primary
    took the first half again when the second got through."""
    primary = _FirstPartOnly(free_port(), max_items=4).start()
    backup_port = free_port()  # nothing listens: the backup level fails too
    audit = Upstream(free_port()).start()
    try:
        agent = agents(["run", "--config", CONFIG, "--state-dir", str(tmp_path / "state"), "--set",
                        "connectors::failover::retry_on_failure::max_elapsed_time=1s"],
                       env=_env(primary.port, Upstream(backup_port), audit))
        sent = send_spans("http", agent.http_port, 8, batch=8)  # one request
        wait_until(lambda: "upstream still failing after retries" in agent.log(), timeout=30,
                   message="the connector's retries over: the lease back in the queue")
        assert len(primary.span_ids()) == 4
        primary.failing = False
        wait_until(lambda: primary.span_ids() >= sent, timeout=30, message="every span at the primary")
        wait_until(lambda: agent.metric("edgeagent_queue_items", exporter="failover") == 0, timeout=10)
        taken = [span.span_id for span in primary.spans()]
        assert len(taken) == len(sent), f"{len(taken) - len(sent)} duplicate spans at the primary"
        assert agent.terminate() == 0
    finally:
        primary.stop()
        audit.stop()
