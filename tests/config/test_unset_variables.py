"""An unset variable without a default reads as otelcol 0.165 reads it: empty, with a warning naming it.

otelcol's envprovider expands `${env:NAME}` with NAME unset to nothing and logs "Configuration
references unset environment variable" with the name; the config then runs, or fails validation
on the empty value. The warning is what points the user at the variable, so it must come before
any error the empty value causes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from edgeagent.config.expand import expand_tree
from edgeagent.config.loader import ConfigError, load_text, load_uris
from tests.config.conftest import CONFIG_DIR, REPO_ROOT, _environment, check_errors, check_valid, run_validate
from tests.helpers.configs import http_exporter, traces_config
from tests.helpers.net import wait_until
from tests.helpers.sdk import send_spans

UNSET = "EDGEAGENT_TEST_UNSET_ENDPOINT"  # the conftest removes every EDGEAGENT_TEST_ variable


def test_an_unset_variable_expands_to_empty_text_with_one_warning_naming_it():
    errors: list = []
    warnings: list[str] = []
    document = {"a": "Bearer ${env:UNSET_A}", "b": "${UNSET_A}-${env:UNSET_B}", "c": "${env:UNSET_A}",
                "d": "${env:SET:-x}${env:UNSET_C:-fallback}"}
    result = expand_tree(document, (), {"SET": "yes"}, errors, warnings)
    assert errors == []
    assert (result["a"], result["b"], result["c"], result["d"]) == ("Bearer ", "-", "", "yesfallback")
    assert len(warnings) == 2, warnings  # one per variable, however often it is referenced; none for a default
    first, second = sorted(warnings, key=lambda warning: "UNSET_B" in warning)
    assert "UNSET_A" in first and "not set" in first and "a" in first and "UNSET_B" not in first
    assert "UNSET_B" in second and "not set" in second


def test_an_unset_header_variable_loads_as_an_empty_header_with_a_warning():
    config = load_text("receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:4318\n"
                       "exporters:\n  otlphttp:\n    endpoint: http://127.0.0.1:4318\n    headers:\n"
                       "      X-Workspace-Id: \"${env:WORKSPACE}\"\n"
                       "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlphttp]\n",
                       environ={})
    assert config.exporters["otlphttp"].config.headers == {"X-Workspace-Id": ""}
    assert [warning for warning in config.warnings if "WORKSPACE" in warning] == [
        next(warning for warning in config.warnings if "exporters::otlphttp::headers::X-Workspace-Id" in warning)]


def test_a_config_source_from_an_unset_variable_is_empty_as_otelcols_resolver_reads_it():
    # otelcol: the env provider's empty YAML is an empty map, merged like any other source
    with pytest.raises(ConfigError) as raised:
        load_uris(["env:NO_CONFIG_HERE"], environ={})
    assert any("NO_CONFIG_HERE" in warning for warning in raised.value.warnings), raised.value.warnings
    assert [path for path, _ in raised.value.errors] == ["service"], raised.value.errors
    config = load_uris([str(CONFIG_DIR / "good-env-default.yaml"), "env:NO_CONFIG_HERE"], environ={})
    assert any("NO_CONFIG_HERE" in warning for warning in config.warnings), config.warnings


def _warned_before_the_first_error(stderr: str, name: str) -> None:
    lines = stderr.splitlines()
    first_error = next(index for index, line in enumerate(lines) if line.startswith("error:"))
    assert any(name in line and "warning" in line.lower() for line in lines[:first_error]), stderr


def test_validate_names_the_unset_variable_behind_a_value_it_refuses():
    result = run_validate(CONFIG_DIR / "bad-env-unset-limit.yaml")
    check_errors(result, [("processors::memory_limiter", ["limit_mib"])])  # 0, as otelcol reads it
    _warned_before_the_first_error(result.stderr, "EDGEAGENT_TEST_UNSET_LIMIT")


def test_run_names_the_unset_variable_behind_a_value_it_refuses(tmp_path):
    run = subprocess.run([sys.executable, "-m", "edgeagent", "run", "--config",
                          str(CONFIG_DIR / "bad-env-unset-limit.yaml"), "--state-dir", str(tmp_path / "state")],
                         capture_output=True, text=True, timeout=60, env=_environment({}), cwd=REPO_ROOT,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 1, run.stderr
    _warned_before_the_first_error(run.stderr, "EDGEAGENT_TEST_UNSET_LIMIT")


def test_an_unset_endpoint_variable_is_no_upstream_yet_named_by_its_warning():
    # an empty endpoint is edgeagent's "no upstream yet, buffer" (otelcol refuses it): the warnings say both
    result = run_validate(CONFIG_DIR / "env-unset-endpoint.yaml")
    check_valid(result)
    assert UNSET in result.stderr and "buffered" in result.stderr, result.describe()


def test_an_unset_variable_in_a_list_item_is_empty_text_named_by_its_warning():
    result = run_validate(CONFIG_DIR / "env-unset-in-list.yaml")
    check_valid(result)
    assert "EDGEAGENT_TEST_UNSET_LOCATION" in result.stderr, result.describe()


def test_an_agent_with_an_unset_header_variable_starts_and_sends_the_header_empty(agents, upstream, tmp_path):
    # a deployment guide's `X-Workspace-Id: "${env:TELEMETRYFLOW_WORKSPACE_ID}"`, the variable unset
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(upstream.url, headers={
        "X-Workspace-Id": "${env:EDGEAGENT_TEST_UNSET_WORKSPACE}"})})
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
    assert "EDGEAGENT_TEST_UNSET_WORKSPACE" in agent.log()
    send_spans("http", agent.http_port, 5)
    wait_until(lambda: upstream.received("traces"), 20, message="spans at the upstream")
    assert upstream.received("traces")[0].headers.get("X-Workspace-Id") == ""
    assert agent.terminate() == 0


def test_a_reload_names_an_unset_variable_whether_the_new_config_applies_or_not(agents, upstream, tmp_path):
    config = tmp_path / "agent.yaml"
    traces_config(config, {"otlphttp": http_exporter(upstream.url)})
    agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")])
    assert "EDGEAGENT_TEST_UNSET" not in agent.log()
    traces_config(config, {"otlphttp": http_exporter(upstream.url, headers={
        "X-Workspace-Id": "${env:EDGEAGENT_TEST_UNSET_WORKSPACE}"})})
    os.kill(agent.process.pid, signal.SIGHUP)
    wait_until(lambda: agent.metric("edgeagent_config_reloads", result="applied") == 1, timeout=15,
               message="the reload applied")
    assert "EDGEAGENT_TEST_UNSET_WORKSPACE" in agent.log()
    traces_config(config, {"otlphttp": http_exporter(upstream.url)},
                  {"memory_limiter": {"check_interval": "1s", "limit_mib": "${env:EDGEAGENT_TEST_UNSET_LIMIT}"}})
    os.kill(agent.process.pid, signal.SIGHUP)
    wait_until(lambda: agent.metric("edgeagent_config_reloads", result="invalid") == 1, timeout=15,
               message="the invalid reload counted")
    log = agent.log()
    assert "EDGEAGENT_TEST_UNSET_LIMIT" in log, log
    assert log.index("EDGEAGENT_TEST_UNSET_LIMIT") < log.index("processors::memory_limiter::limit_mib"), log
    assert agent.terminate() == 0
