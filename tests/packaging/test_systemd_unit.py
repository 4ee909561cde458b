"""The systemd unit verifies, is hardened to an exposure level of 2.0 or better, and fits the memory limiter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.packaging.startup import slowest_start
from tests.packaging.tools import find, require

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edgeagent.service"


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's edgeagent (the package installs /usr/bin/edgeagent)."""
    executable = find("edgeagent")
    assert executable, "edgeagent is not installed in this environment"
    unit = tmp_path / "edgeagent.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/edgeagent", executable))
    return unit


def test_systemd_analyze_verify_passes(tmp_path):
    analyze = require("systemd-analyze", "apt-get install -y systemd")
    result = subprocess.run([analyze, "verify", str(_unit_for_this_machine(tmp_path))], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_exposure_level_is_2_or_better(tmp_path):
    analyze = require("systemd-analyze", "apt-get install -y systemd")
    result = subprocess.run([analyze, "security", "--offline=yes", str(_unit_for_this_machine(tmp_path))],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for edgeagent\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    print(f"systemd-analyze security: exposure level {match.group(1)}")
    assert float(match.group(1)) <= 2.0


def test_unit_runs_as_notify_with_watchdog_state_and_config_directories():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=edgeagent",
                 "ConfigurationDirectory=edgeagent", "EnvironmentFile=-/etc/edgeagent/edgeagent.env",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"):
        assert line in text, line


def test_memory_max_sits_above_the_memory_limiter_of_the_default_config():
    default = yaml.safe_load((ROOT / "edgeagent" / "config" / "default.yaml").read_text())
    limit_mib = default["processors"]["memory_limiter"]["limit_mib"]
    memory_max = re.search(r"^MemoryMax=(\d+)M$", UNIT.read_text(), re.M)
    assert memory_max and limit_mib < int(memory_max.group(1)) <= limit_mib * 1.5


def _exec_lines(key: str) -> list[list[str]]:
    return [line.split("=", 1)[1].split() for line in UNIT.read_text().splitlines() if line.startswith(f"{key}=")]


RELOADED = """
receivers:
  otlp:
    protocols:
      http:
processors:
  attributes/mark:
    actions:
      - {key: config, value: second, action: upsert}
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:9
    sending_queue: {storage: file_storage}
extensions:
  health_check:
  file_storage:
    directory: %s
service:
  extensions: [health_check, file_storage]
  pipelines:
    traces: {receivers: [otlp], processors: [%s], exporters: [otlphttp]}
"""


def _systemctl_reload(pid: int, config: Path, state: Path) -> subprocess.CompletedProcess:
    """The unit's ExecReload lines run as systemd runs them: in order, stopping at the first failure,
    with the service's environment ($STATE_DIRECTORY) and `config` for /etc/edgeagent/config.yaml."""
    executable = find("edgeagent")
    assert executable, "edgeagent is not installed in this environment"
    result = subprocess.CompletedProcess([], 0, "", "")
    for line in _exec_lines("ExecReload"):
        argv = [executable if word == "/usr/bin/edgeagent" else str(config) if word == "/etc/edgeagent/config.yaml"
                else word.replace("$MAINPID", str(pid)) for word in line]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                                env={**os.environ, "STATE_DIRECTORY": str(state)})
        if result.returncode != 0:
            break
    return result


def test_systemctl_reload_fails_saying_why_when_the_agent_keeps_its_config(agents, tmp_path):
    """`systemctl reload` validated the file, then sent SIGHUP and succeeded: a config the running
    agent then refused (a queue directory moved, which takes a restart) or one differing from what
    ExecStart runs (its other --config, its --set) left the old config running while the command
    said the reload was done. The reload must answer with the agent's own verdict."""
    state, queue = tmp_path / "state", tmp_path / "queue"
    config = tmp_path / "config.yaml"
    config.write_text(RELOADED % (queue, ""))
    agent = agents(["run", "--config", str(config)], env={"STATE_DIRECTORY": str(state)})
    config.write_text(RELOADED % (tmp_path / "elsewhere", ""))  # valid, yet applied only by a restart
    result = _systemctl_reload(agent.process.pid, config, state)
    assert result.returncode != 0 and "restart" in result.stdout + result.stderr, result
    config.write_text(RELOADED % (queue, "nowhere"))  # invalid
    result = _systemctl_reload(agent.process.pid, config, state)
    assert result.returncode != 0 and "nowhere" in result.stdout + result.stderr, result
    config.write_text(RELOADED % (queue, "attributes/mark"))
    result = _systemctl_reload(agent.process.pid, config, state)
    assert result.returncode == 0, result
    assert agent.metric("edgeagent_config_reloads", result="applied") == 1
    assert agent.process.poll() is None


def test_reload_goes_to_the_agent_the_unit_runs():
    """The reload asks the running agent (its control socket in $STATE_DIRECTORY), which reads again
    the very sources ExecStart gave it; no second copy of the command line to keep in step."""
    (start,) = _exec_lines("ExecStart")
    assert _exec_lines("ExecReload") == [[start[0], "reload"]]


def test_a_start_that_compacts_a_full_queue_fits_the_start_timeout():
    """The package's config compacts its queue at start, before READY=1: past TimeoutStartSec (90 s
    by default) systemd killed the start, and restarted it into the same compaction, for good."""
    shipped = yaml.safe_load((ROOT / "packaging" / "debian" / "config.yaml").read_text())
    timeout = re.search(r"^TimeoutStartSec=(\d+)min$", UNIT.read_text(), re.M)
    assert timeout and int(timeout.group(1)) * 60 >= slowest_start(shipped)


def test_a_queue_directory_the_unit_keeps_read_only_is_refused_with_the_fix(tmp_path):
    """ProtectSystem=strict leaves only /var/lib/edgeagent writable: a queue moved to a data partition
    failed with a bare "Read-only file system" on a directory that `ls -l` shows the agent's own,
    every two seconds (Restart=on-failure), with nothing saying what to change."""
    unshare = require("unshare", "apt-get install -y util-linux")
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount in a mount namespace needs root (CI runs as root)")
    data = tmp_path / "data"
    data.mkdir()
    script = (f"mount --make-rprivate / && mount --bind {data} {data} && mount -o remount,bind,ro {data} && "
              f'exec "$@"')
    result = subprocess.run(
        [unshare, "-m", "sh", "-c", script, "sh", sys.executable, "-m", "edgeagent", "run", "--state-dir",
         str(tmp_path / "state"), "--set", f"extensions::file_storage::directory={data / 'queue'}",
         "--set", "service::extensions=[health_check, file_storage]",
         "--set", "exporters::otlphttp::sending_queue::storage=file_storage"],
        env={**os.environ, "INVOCATION_ID": "0" * 32, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 1, result.stderr
    assert str(data / "queue") in result.stderr and "systemctl edit edgeagent" in result.stderr, result.stderr
    assert "ReadWritePaths=" in result.stderr, result.stderr


def _writable_under_the_unit() -> list[str]:
    """The directories ProtectSystem=strict leaves writable: StateDirectory= (under /var/lib) and ReadWritePaths=."""
    writable = []
    for line in UNIT.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "StateDirectory":
            writable += [f"/var/lib/{name}" for name in value.split()]
        elif key == "ReadWritePaths":
            writable += [path.lstrip("-+") for path in value.split()]
    return writable


SEEDS = ROOT / "tests" / "testdata" / "seeds"


@pytest.mark.parametrize("seed", sorted(path.name for path in SEEDS.glob("*.yaml")
                                         if "file_storage" in path.read_text()))
def test_the_queue_directory_of_an_otelcol_config_is_writable_under_the_unit(seed):
    """The deployment guides' configs keep their queue in /var/lib/otelcol/queue, where otelcol's
    file_storage keeps it by default: copied into /etc/edgeagent/config.yaml as a drop-in, each failed
    to start under ProtectSystem=strict ("Read-only file system"), restarting every two seconds."""
    extensions = yaml.safe_load((SEEDS / seed).read_text()).get("extensions") or {}
    directories = [settings["directory"] for name, settings in extensions.items()
                   if name.split("/")[0] == "file_storage" and settings and settings.get("directory")]
    assert directories, seed
    writable = _writable_under_the_unit()
    for directory in directories:
        assert any(os.path.commonpath([directory, root]) == root for root in writable), (directory, writable)
