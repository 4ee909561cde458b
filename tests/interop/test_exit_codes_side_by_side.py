"""Exit codes side by side with otelcol 0.165's: a bad config, a missing one, an unknown flag and an
unknown verb end `edgeagent` with the code they end `otelcol-contrib` with (1), so a unit, a
wrapper script or a container orchestrator reads both alike."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.config.conftest import REPO_ROOT, _environment

pytestmark = pytest.mark.e2e

BAD = "receivers: {otlp: {protocols: {http: {endpoint: 127.0.0.1:4318, bogus: 1}}}}\n" \
      "exporters: {debug: {}}\n" \
      "service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}\n"


@pytest.mark.parametrize("argv", [
    ["validate", "--config", "{bad}"],
    ["--config", "{bad}"],
    ["validate", "--config", "{missing}"],
    ["--no-such-flag"],
    ["validate", "--no-such-flag"],
    ["no-such-verb"],
], ids=["validate a bad config", "run a bad config", "validate a missing config", "unknown flag",
        "unknown flag of validate", "unknown verb"])
def test_each_failure_exits_with_otelcol_code(otelcol_binary, tmp_path, argv):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    args = [arg.format(bad=bad, missing=tmp_path / "missing.yaml") for arg in argv]
    theirs = subprocess.run([str(otelcol_binary), *args], capture_output=True, text=True, timeout=60, check=False,
                            stdin=subprocess.DEVNULL)
    ours = subprocess.run([sys.executable, "-m", "edgeagent", *args], capture_output=True, text=True, timeout=60,
                          check=False, env=_environment(None), cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    assert theirs.returncode == 1, theirs.stderr[-2000:]
    assert ours.returncode == theirs.returncode, ours.stderr[-2000:]
