"""A SIGTERM while the upstream is down (nothing listens at its port): the agent exits at once, every
queued item stays queued, and no attempt starts after the stop began.

The exporter's consumers are then waiting: in their backoff, or for the link's permission to send
(an offline link lets one probe through per backoff interval). Both waits end with the stop."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers.cli import cli_json
from tests.helpers.configs import traces_config
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans

EXPORTERS = {
    "otlphttp": lambda port: {"endpoint": f"http://127.0.0.1:{port}"},
    "otlp": lambda port: {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}},
}
# otelcol's default (5 s, ±50 %): the waits outlast the stop; half a second: they end during it
RETRIES = {"default": {}, "short": {"retry_on_failure": {"initial_interval": "500ms", "max_interval": "500ms"}}}


def _after_the_stop(log: str) -> list[dict]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    stopping = next(index for index, line in enumerate(lines) if line["msg"].startswith("stopping"))
    return lines[stopping + 1:]


@pytest.mark.parametrize("retry", list(RETRIES))
@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_a_stop_with_the_upstream_down_ends_every_wait_at_once_and_keeps_the_queue(agents, tmp_path, exporter, retry):
    closed = free_port()  # nothing listens there: every connect is refused at once
    # ten consumers: after three refusals the link is offline, one consumer probes at a time and
    # the others wait for their turn
    config = traces_config(tmp_path / "agent.yaml", {exporter: {**EXPORTERS[exporter](closed), **RETRIES[retry]}})
    state = tmp_path / "state"
    agent = agents(["run", "--config", config, "--state-dir", str(state),
                    "--set", "service::telemetry::logs::level=debug"])
    send_spans("http", agent.http_port, 200, batch=10)  # 20 requests, more than the consumers
    wait_until(lambda: "upstream is unreachable" in agent.log(), timeout=10, message="the link offline")
    wait_until(lambda: agent.metric("edgeagent_queue_items") == 200, timeout=10, message="the spans queued")
    started = time.monotonic()
    assert agent.terminate() == 0
    took = time.monotonic() - started
    after = _after_the_stop(agent.log())
    assert [line["msg"] for line in after if line["level"] in ("warning", "error") or "retry" in line["msg"]] == []
    assert took < 1.0, f"the stop took {took:.2f} s"
    stats = cli_json(state, "queue", "stats")
    assert stats["stores"][0]["queues"][f"{exporter}/traces"]["items"] == 200
