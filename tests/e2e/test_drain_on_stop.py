"""--drain-timeout: a stopping agent (a hub scaled down) sends its queue before it exits."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.cli import cli_json
from tests.helpers.configs import http_exporter, traces_config
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans


def test_sigterm_with_drain_timeout_delivers_the_queue_before_exiting(agents, upstream, tmp_path):
    upstream.status = 503  # reachable, refusing: everything stays queued until the stop
    agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", upstream.url, "--drain-timeout", "20",
                    "--set", "exporters::otlphttp::retry_on_failure::initial_interval=100ms",
                    "--set", "exporters::otlphttp::retry_on_failure::max_interval=200ms"])
    sent = send_spans("http", agent.http_port, 2000)
    wait_until(lambda: upstream.attempts > 0, timeout=10, message="a first refused attempt")
    os.kill(agent.process.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert agent.process.poll() is None  # still draining, not gone
    upstream.status = 200
    assert agent.process.wait(timeout=25) == 0
    assert upstream.span_ids() == sent
    assert "draining the queues before stopping" in agent.log()


def test_drain_ends_at_the_deadline_and_keeps_the_rest_queued(agents, upstream, tmp_path):
    upstream.status = 503
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", upstream.url, "--drain-timeout", "1"])
    send_spans("http", agent.http_port, 100)
    started = time.monotonic()
    os.kill(agent.process.pid, signal.SIGTERM)
    assert agent.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 10
    assert "stopping with data still queued" in agent.log()
    stats = cli_json(state, "queue", "stats")
    assert stats["stores"][0]["queues"]["otlphttp/traces"]["items"] == 100  # kept for the next start


def test_a_drain_waits_for_the_traces_tail_sampling_holds_and_delivers_those_it_keeps(agents, upstream, tmp_path):
    # a hub scaled down for good drains before it goes: its export queue was empty, so the drain
    # ended at once and the traces the sampler was holding (their decision_wait not over) stayed
    # on a volume nobody mounts again, acknowledged and never delivered
    sampling = {"tail_sampling": {"decision_wait": "5s", "policies": [{"name": "all", "type": "always_sample"}]}}
    config = traces_config(tmp_path / "hub.yaml", {"otlphttp": http_exporter(upstream.url)}, sampling)
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state"), "--drain-timeout", "20"])
    sent = send_spans("http", agent.http_port, 50)
    wait_until(lambda: agent.metric("otelcol_processor_tail_sampling_sampling_traces_on_memory") > 0, timeout=10,
               message="traces held by the sampler")
    assert not upstream.span_ids()
    os.kill(agent.process.pid, signal.SIGTERM)
    assert agent.process.wait(timeout=25) == 0
    assert upstream.span_ids() == sent


DRAINING = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
exporters:
  otlphttp:
    endpoint: ${env:UPSTREAM}
    retry_on_failure: {initial_interval: 100ms, max_interval: 200ms}
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], exporters: [otlphttp]}
"""


def test_a_sighup_while_draining_opens_no_receiver_and_the_drain_goes_on(agents, upstream, tmp_path):
    """A SIGHUP after the SIGTERM (a config management run during a long drain) applied the new
    config: its receivers started accepting data again in a process on its way out."""
    ports = AgentProcess(args=[])
    flags = ports.ports_overrides()
    overrides = [part for flag, value in zip(flags[::2], flags[1::2], strict=True) if "protocols::http::" not in value
                 for part in (flag, value)]  # the HTTP endpoint comes from the file, which the SIGHUP reads again
    config = tmp_path / "agent.yaml"
    config.write_text(DRAINING % ports.http_port)
    upstream.status = 503
    agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state"), "--drain-timeout", "20",
                    *overrides], ports=ports, port_overrides=False, env={"UPSTREAM": upstream.url})
    sent = send_spans("http", agent.http_port, 200)
    wait_until(lambda: upstream.attempts > 0, timeout=10, message="a first refused attempt")
    os.kill(agent.process.pid, signal.SIGTERM)
    wait_until(lambda: "draining the queues before stopping" in agent.log(), timeout=10, message="the drain")
    moved = free_port()
    config.write_text(DRAINING % moved)
    os.kill(agent.process.pid, signal.SIGHUP)
    wait_until(lambda: "config reload" in agent.log(), timeout=10, message="the SIGHUP handled")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", moved), timeout=2).close()
    assert agent.process.poll() is None  # still draining
    upstream.status = 200
    assert agent.process.wait(timeout=25) == 0
    assert upstream.span_ids() == sent
