"""The promise: an OK means the data is on disk; it survives outages, kill -9 and restarts."""

from __future__ import annotations

import os
import stat
import time

import pytest

from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream

SPANS = 10_000  # 20 requests of 512 spans: many records, each acknowledged once on disk


def _run_default(agents, state_dir, upstream_url, ports=None):
    return agents(["run", "--state-dir", str(state_dir), "--upstream", upstream_url], ports=ports)


def _restart_and_expect_delivery(agents, tmp_path, port: int, previous, sent: set[bytes]) -> None:
    """Start the upstream, restart the agent on the same queue, and expect exactly `sent` upstream."""
    upstream = Upstream(port).start()
    try:
        restarted = _run_default(agents, tmp_path / "state", f"http://127.0.0.1:{port}", ports=previous)
        wait_until(lambda: upstream.span_ids() >= sent, timeout=90, interval=0.25, message="backlog delivered")
        assert upstream.span_ids() == sent
        assert restarted.terminate() == 0
    finally:
        upstream.stop()


def test_spans_accepted_during_an_outage_all_arrive_when_the_upstream_returns(agents, tmp_path):
    port = free_port()
    agent = _run_default(agents, tmp_path / "state", f"http://127.0.0.1:{port}")
    sent = send_spans("http", agent.http_port, SPANS // 2) | send_spans("grpc", agent.grpc_port, SPANS // 2)
    assert len(sent) == SPANS
    assert agent.metric("otelcol_receiver_accepted_spans") == SPANS
    # the exporter learns of the outage from its first attempts, which may come after the last send
    wait_until(lambda: agent.health()[1]["exporters"]["otlphttp"]["upstream"] == "offline", timeout=10,
               message="the exporter offline")

    upstream = Upstream(port).start()
    try:
        wait_until(lambda: upstream.span_ids() >= sent, timeout=90, interval=0.25, message="backlog delivered")
        assert upstream.span_ids() == sent
        wait_until(lambda: agent.metric("otelcol_exporter_sent_spans") == SPANS, timeout=10)
        # acks linger briefly before they commit
        wait_until(lambda: agent.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=10)
        assert agent.metric("edgeagent_upstream_online", exporter="otlphttp") == 1
    finally:
        upstream.stop()
    assert agent.terminate() == 0


def test_kill_9_after_accepting_loses_nothing(agents, tmp_path):
    port = free_port()
    agent = _run_default(agents, tmp_path / "state", f"http://127.0.0.1:{port}")
    sent = send_spans("http", agent.http_port, SPANS)
    assert agent.metric("otelcol_receiver_accepted_spans") == SPANS
    agent.kill()

    _restart_and_expect_delivery(agents, tmp_path, port, agent, sent)


def test_sigterm_with_a_backlog_exits_0_within_10s_and_the_next_start_drains_it(agents, tmp_path):
    port = free_port()
    agent = _run_default(agents, tmp_path / "state", f"http://127.0.0.1:{port}")
    sent = send_spans("grpc", agent.grpc_port, SPANS)
    started = time.monotonic()
    assert agent.terminate(timeout=10) == 0
    assert time.monotonic() - started < 10

    _restart_and_expect_delivery(agents, tmp_path, port, agent, sent)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_state_files_are_private_whatever_the_umask(agents, tmp_path, umask):
    state = tmp_path / "state"
    old = os.umask(umask)
    try:
        agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"])
    finally:
        os.umask(old)
    send_spans("http", agent.http_port, 10)
    modes = {}
    for directory, dirs, files in os.walk(state):
        for name in [*dirs, *files, "."]:
            path = os.path.normpath(os.path.join(directory, name))
            modes[path] = stat.S_IMODE(os.lstat(path).st_mode)
    assert modes and {path: mode for path, mode in modes.items() if mode & 0o077} == {}
    assert agent.terminate() == 0
