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


def test_reload_validates_the_config_the_service_runs_then_sends_sighup(tmp_path):
    """`systemctl reload` must not hand a broken config to the running agent: systemd runs the
    ExecReload lines in order and stops at the first failure, so validation comes before SIGHUP."""
    (start,) = _exec_lines("ExecStart")
    validate, hup = _exec_lines("ExecReload")
    assert validate[:2] == [start[0], "validate"] and validate[2:] == start[2:], validate
    assert hup == ["/bin/kill", "-HUP", "$MAINPID"]
    executable = find("edgeagent")
    assert executable, "edgeagent is not installed in this environment"
    shipped = ROOT / "packaging" / "debian" / "config.yaml"  # what the package installs as /etc/edgeagent/config.yaml
    assert subprocess.run([executable, "validate", "--config", str(shipped)], capture_output=True,
                          check=False).returncode == 0
    broken = tmp_path / "config.yaml"
    broken.write_text(shipped.read_text() + "\nservice: {pipelines: {traces: {receivers: [nowhere]}}}\n")
    result = subprocess.run([executable, "validate", "--config", str(broken)], capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0, result.stdout  # the reload stops here; the running config stays


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
