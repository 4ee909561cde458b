"""Reloads and the queues: a store a reload opens takes data, and no reload strands queued data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.test_reload import _request
from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
exporters:
  otlphttp/%(exporter)s:
    endpoint: %(endpoint)s
    retry_on_failure: {initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 0s}
    sending_queue: {%(queue)s}
extensions:
  health_check:
%(extensions)s
service:
  extensions: [health_check%(service_extensions)s]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [%(processors)s]
      exporters: [otlphttp/%(exporter)s]
"""


def _config(exporter: str, endpoint: str, queue: str = "", extensions: str = "", processors: str = "") -> str:
    names = "".join(f", {line.strip().rstrip(':')}" for line in extensions.splitlines() if line.startswith("  ")
                    and not line.startswith("   "))
    return CONFIG % {"exporter": exporter, "endpoint": endpoint, "queue": queue, "extensions": extensions,
                     "service_extensions": names, "processors": processors}


def _reload(state: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeagent", "reload", "--state-dir", state],
                          capture_output=True, text=True, timeout=30)


def test_a_queue_storage_a_reload_adds_takes_data(agents, upstream, tmp_path):
    config, state = tmp_path / "agent.yaml", str(tmp_path / "state")
    config.write_text(_config("a", upstream.url))
    agent = agents(["run", "--config", str(config), "--state-dir", state])
    storage = f"  file_storage/new:\n    directory: {tmp_path / 'new'}\n"
    config.write_text(_config("b", upstream.url, "storage: file_storage/new", storage))
    result = _reload(state)
    assert result.returncode == 0, result.stdout + result.stderr
    status, _ = post(agent.http_port, _request(1))
    assert status == 200
    wait_until(lambda: upstream.span_ids() == {(1).to_bytes(8, "big")}, timeout=15, message="delivered")
    assert agent.health()[1]["healthy"] is True


def test_a_store_opened_by_a_refused_reload_is_closed_and_the_next_config_opens_its_own(agents, upstream, tmp_path):
    config, state = tmp_path / "agent.yaml", str(tmp_path / "state")
    config.write_text(_config("a", upstream.url))
    agent = agents(["run", "--config", str(config), "--state-dir", state])
    storage = "  file_storage/new:\n    directory: %s\n"
    twice = _config("b", upstream.url, "storage: file_storage/new", storage % (tmp_path / "first"),
                    processors="tail_sampling").replace("processors: [tail_sampling]", "processors: [tail_sampling]\n"
                                                        "      exporters: [otlphttp/b]\n    traces/second:\n"
                                                        "      receivers: [otlp]\n      processors: [tail_sampling]")
    twice = twice.replace("extensions:\n", "processors:\n  tail_sampling:\n    policies: [{name: all, type: "
                          "always_sample}]\nextensions:\n", 1)
    config.write_text(twice)
    refused = _reload(state)
    assert refused.returncode == 1 and "used by two pipelines" in refused.stdout, refused.stdout + refused.stderr
    config.write_text(_config("b", upstream.url, "storage: file_storage/new", storage % (tmp_path / "second")))
    applied = _reload(state)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert post(agent.http_port, _request(2))[0] == 200
    wait_until(lambda: upstream.span_ids() == {(2).to_bytes(8, "big")}, timeout=15, message="delivered")
    stats = subprocess.run([sys.executable, "-m", "edgeagent", "queue", "stats", "--json", "--state-dir", state],
                           capture_output=True, text=True, timeout=30)
    directories = {store["directory"] for store in json.loads(stats.stdout)["stores"]}
    assert str(tmp_path / "second") in directories and str(tmp_path / "first") not in directories


def _status(state: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeagent", "status", *args, "--state-dir", state],
                          capture_output=True, text=True, timeout=30)


def _queued_behind_a_dead_upstream(agents, tmp_path, requests: int = 3, **options):
    config, state = tmp_path / "agent.yaml", str(tmp_path / "state")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the queue keeps what it gets
    config.write_text(_config("a", dead, **options))
    agent = agents(["run", "--config", str(config), "--state-dir", state])
    for number in range(1, requests + 1):
        assert post(agent.http_port, _request(number))[0] == 200
    return agent, config, state, dead


@pytest.mark.parametrize("change", ["renamed", "queue disabled", "storage moved"])
def test_a_reload_that_would_strand_queued_data_is_refused_naming_the_queue_and_the_fix(agents, upstream, tmp_path,
                                                                                          change):
    agent, config, state, dead = _queued_behind_a_dead_upstream(agents, tmp_path)
    new = {"renamed": _config("b", upstream.url),
           "queue disabled": _config("a", upstream.url, "enabled: false"),
           "storage moved": _config("a", upstream.url, "storage: file_storage/new",
                                    f"  file_storage/new:\n    directory: {tmp_path / 'new'}\n")}[change]
    config.write_text(new)
    refused = _reload(state)
    assert refused.returncode == 1 and "reload refused" in refused.stdout, refused.stdout + refused.stderr
    assert "otlphttp/a/traces holds 3 items" in refused.stdout
    assert "edgeagent queue purge --queue otlphttp/a/traces --yes" in refused.stdout
    assert post(agent.http_port, _request(4))[0] == 200  # the running config stays
    purge = subprocess.run([sys.executable, "-m", "edgeagent", "queue", "purge", "--queue", "otlphttp/a/traces",
                            "--yes", "--state-dir", state], capture_output=True, text=True, timeout=30)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    applied = _reload(state)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert post(agent.http_port, _request(5))[0] == 200
    wait_until(lambda: upstream.span_ids() == {(5).to_bytes(8, "big")}, timeout=15, message="delivered")


def test_a_reload_that_drops_a_tail_sampling_buffer_holding_traces_is_refused(agents, upstream, tmp_path):
    sampling = "tail_sampling"
    options = {"processors": sampling}
    config, state = tmp_path / "agent.yaml", str(tmp_path / "state")
    text = _config("a", upstream.url, **options).replace(
        "extensions:\n", "processors:\n  tail_sampling:\n    decision_wait: 60s\n    policies: [{name: all, "
        "type: always_sample}]\nextensions:\n", 1)
    config.write_text(text)
    agent = agents(["run", "--config", str(config), "--state-dir", state])
    assert post(agent.http_port, _request(1))[0] == 200
    config.write_text(_config("a", upstream.url))
    refused = _reload(state)
    assert refused.returncode == 1 and "reload refused" in refused.stdout, refused.stdout + refused.stderr
    assert "processors::tail_sampling" in refused.stdout and "1 records" in refused.stdout
    assert agent.health()[1]["tail_sampling"]["tail_sampling"]["buffered_traces"] == 1


def test_queued_data_no_exporter_of_the_config_sends_is_reported_at_start_and_in_status(agents, upstream, tmp_path):
    agent, config, state, _ = _queued_behind_a_dead_upstream(agents, tmp_path, requests=2)
    assert agent.terminate() == 0
    config.write_text(_config("b", upstream.url))  # the exporter renamed while the agent was down
    agent = agents(["run", "--config", str(config), "--state-dir", state])
    assert "otlphttp/a/traces" in agent.log() and "edgeagent queue purge --queue otlphttp/a/traces" in agent.log()
    status = _status(state, "--json")
    assert json.loads(status.stdout)["unowned_queues"]["otlphttp/a/traces"]["items"] == 2
    assert json.loads(status.stdout)["backlog_items"] == 0  # it never drains: no time to empty waits for it
    text = _status(state).stdout
    assert "warning: queue otlphttp/a/traces" in text and "edgeagent queue purge --queue otlphttp/a/traces" in text
    purge = subprocess.run([sys.executable, "-m", "edgeagent", "queue", "purge", "--queue", "otlphttp/a/traces",
                            "--yes", "--state-dir", state], capture_output=True, text=True, timeout=30)
    assert json.loads(purge.stdout)["purged_records"] == 2
    assert json.loads(_status(state, "--json").stdout)["unowned_queues"] == {}
