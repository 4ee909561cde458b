"""`edgeagent status` and the log while the upstream is away: no stale time to empty."""

from __future__ import annotations

import json

from tests.helpers.cli import cli, cli_json
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream


def test_status_says_waiting_for_upstream_while_offline_then_drains(agents, tmp_path):
    state = tmp_path / "state"
    port = free_port()  # nothing listens yet: the upstream is offline
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{port}",
                    "--set", "exporters::otlphttp::retry_on_failure::initial_interval=100ms",
                    "--set", "exporters::otlphttp::retry_on_failure::max_interval=500ms"])
    send_spans("http", agent.http_port, 200)
    wait_until(lambda: cli_json(state, "status")["exporters"]["otlphttp"]["upstream"] == "offline", timeout=20,
               message="the upstream seen offline")
    status = cli_json(state, "status")
    assert status["backlog_items"] == 200
    assert status["drain"] == "waiting for upstream" and status["eta_seconds"] is None
    assert status["oldest_age_seconds"] > 0
    assert "waiting for upstream" in cli(state, "status").stdout.decode()
    wait_until(lambda: "backlog waiting for upstream" in agent.log(), timeout=15, message="the offline log line")

    upstream = Upstream(port).start()
    try:
        wait_until(lambda: len(upstream.spans()) == 200, timeout=30, message="the backlog delivered")
        wait_until(lambda: cli_json(state, "status")["drain"] == "empty", timeout=10, message="status says empty")
        assert cli_json(state, "status")["eta_seconds"] == 0.0
    finally:
        upstream.stop()


ENV_CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:${env:RECEIVER_PORT}
exporters:
  otlphttp:
    endpoint: ${env:UPSTREAM}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
  extensions: [health_check]
extensions:
  health_check:
"""


def test_status_and_queue_work_from_a_shell_without_the_configs_variables(agents, tmp_path):
    state, config = tmp_path / "state", tmp_path / "agent.yaml"
    config.write_text(ENV_CONFIG)
    agents(["run", "--config", str(config), "--state-dir", str(state)],
           env={"RECEIVER_PORT": str(free_port()), "UPSTREAM": f"http://127.0.0.1:{free_port()}"})
    status = cli(state, "status", "--config", str(config), check=False)  # the admin's shell lacks both variables
    assert status.returncode == 0, status.stderr.decode()
    assert b"is running" in status.stdout
    assert cli(state, "queue", "stats", "--config", str(config), check=False).returncode == 0


def test_status_without_an_agent_reads_the_config_with_its_variables_unset(tmp_path):
    # as otelcol reads it: an unset variable is empty, so the queue files are read all the same (the
    # admin's shell often lacks the unit's variables: status, unlike validate and run, does not warn)
    config = tmp_path / "agent.yaml"
    config.write_text(ENV_CONFIG)
    result = cli(tmp_path / "state", "status", "--config", str(config), check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 3, stderr  # not running
    assert "Traceback" not in stderr and "error" not in stderr, stderr


def test_status_beside_a_stopped_agent_says_the_upstream_is_unknown_not_unconfigured(agents, tmp_path):
    """The agent's upstream came from its unit's environment (--upstream, EDGEAGENT_UPSTREAM), which
    the operator's shell lacks: a stopped agent's status said "upstream not configured" and a drain
    state of "no upstream", sending the on-call engineer to fix a config that was right."""
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"])
    send_spans("http", agent.http_port, 50)
    assert agent.terminate() == 0
    status = cli(state, "status", "--json", check=False)
    assert status.returncode == 3
    offline = json.loads(status.stdout)
    assert offline["running"] is False and offline["backlog_items"] == 50
    assert offline["exporters"]["otlphttp"]["upstream"] == "unknown"
    assert offline["drain"] == "not running" and offline["eta_seconds"] is None
    text = cli(state, "status", check=False).stdout.decode()
    assert "not configured" not in text and "upstream unknown" in text, text


def test_status_of_an_upstream_refusing_everything_says_retrying_and_why(agents, upstream, tmp_path):
    """Reachable but answering 503: the text said "upstream online", drain "starting", and left out
    the upstream's answer, which only the JSON carried."""
    state = tmp_path / "state"
    upstream.status = 503
    agent = agents(["run", "--state-dir", str(state), "--upstream", upstream.url,
                    "--set", "exporters::otlphttp::retry_on_failure::initial_interval=100ms"])
    send_spans("http", agent.http_port, 50)
    wait_until(lambda: "problem" in cli_json(state, "status")["exporters"]["otlphttp"], timeout=15,
               message="the refusal seen")
    status = cli_json(state, "status")
    assert status["drain"] == "retrying" and status["eta_seconds"] is None
    text = cli(state, "status").stdout.decode()
    assert "503" in text and "time to empty: retrying" in text, text


def test_the_start_up_log_says_the_backlog_a_restart_found_once_as_a_count(agents, tmp_path):
    """Restarted with 50 spans queued, the log said "queue storage open" with backlog_items 0 (its
    queues were not open yet) and then "edgeagent is ready" with backlog_items a map: two numbers
    that disagreed, and one field of two types, which a log store mapping it as a number refuses."""
    state = tmp_path / "state"
    args = ["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"]
    agent = agents(args)
    send_spans("http", agent.http_port, 50)
    assert agent.terminate() == 0
    restarted = agents(args)
    assert restarted.terminate() == 0
    with open(restarted.log_path, encoding="utf-8") as log:
        lines = [json.loads(line) for line in log if line.startswith("{")]
    said = [(line["msg"], line["backlog_items"]) for line in lines if "backlog_items" in line]
    assert said == [("edgeagent is ready", 50)], said
    ready = next(line for line in lines if line["msg"] == "edgeagent is ready")
    assert ready["queues"] == {"otlphttp/traces": 50}


def test_status_json_says_whether_the_agent_runs_both_ways(agents, tmp_path):
    """Only a stopped agent's status carried "running": a script reading it from a running one's
    failed, and the exit code was the only way to tell."""
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"])
    assert cli_json(state, "status")["running"] is True
    assert agent.terminate() == 0
    assert json.loads(cli(state, "status", "--json", check=False).stdout)["running"] is False
