"""The systemd unit verifies, is hardened to an exposure level of 2.0 or better, and fits the memory limiter."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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
