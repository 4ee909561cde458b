"""The complete seed configs run byte for byte: no `--set`, their own ports, their own queue directory.

Each runs in private network and mount namespaces (tests/helpers/verbatim.py), where 0.0.0.0:4317,
:4318, :13133 and :8888 are free and `/var/lib` is a fresh tmpfs; the platform is an upstream on that
namespace's loopback. Needs root and util-linux's `unshare`; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SEEDS = os.path.join(ROOT, "tests", "testdata", "seeds")
# scraped before the first send (the seeds batch for 10 s or 30 s): the queue's gauges, which the guide's
# HPA and TFOQueueFilling alert read
EXPORTER_SERIES = {"otelcol_exporter_queue_size", "otelcol_exporter_queue_capacity"}


def _walk(seed: str, tmp_path) -> dict:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip for private network and mount namespaces")
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:  # root in a container without CAP_SYS_ADMIN
        pytest.skip(f"this machine refuses new network and mount namespaces: {probe.stderr.strip()}")
    log = tmp_path / "agent.log"
    script = (f"ip link set lo up && mount -t tmpfs tmpfs /var/lib && "
              f"exec {sys.executable} -m tests.helpers.verbatim {os.path.join(SEEDS, seed)} {log}")
    env = {**os.environ, "PYTHONPATH": ROOT}
    env = {key: value for key, value in env.items() if not key.startswith(("TELEMETRYFLOW_", "EDGEAGENT_"))}
    run = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["started"], log.read_text()[-3000:]
    return result


@pytest.mark.parametrize("seed", ["tfo-direct.yaml", "tfo-edge-buffering.yaml"])
def test_seed_with_every_signal_runs_verbatim_and_delivers_all_of_it(seed, tmp_path):
    result = _walk(seed, tmp_path)
    assert result["exit"] == 0
    assert result["health_13133"] == 200 and result["health_4318"] == 200
    assert result["queue_directory"]
    assert EXPORTER_SERIES <= set(result["exporter_series"])
    assert result["spans_match"] and result["spans_received"] == 40, result
    assert result["points_received"] == 5 and result["logs_received"] == 4
    assert {"x-workspace-id", "x-tenant-id", "content-encoding"} <= set(result["headers"])
    bearer = ["Bearer tfk-3f9a61c2.tfs-5be0d7a4e8"] if seed == "tfo-direct.yaml" else [""]
    assert result["authorization"] == bearer


def test_hub_collector_seed_runs_verbatim_and_delivers_its_metrics(tmp_path):
    result = _walk("tfo-hub-collector.yaml", tmp_path)
    assert result["exit"] == 0
    assert result["health_13133"] == 0  # it configures no health_check
    assert result["health_4318"] == 200 and result["queue_directory"]
    assert result["points_received"] == 5
    assert {"x-workspace-id", "x-tenant-id"} <= set(result["headers"])


def test_hub_agent_seed_runs_verbatim_and_keeps_what_its_unresolvable_collector_cannot_take(tmp_path):
    result = _walk("tfo-hub-agent.yaml", tmp_path)
    assert result["exit"] == 0
    assert result["health_4318"] == 200
    assert result["points_received"] == 0
    assert "otelcol_exporter_queue_size" in result["exporter_series"]
