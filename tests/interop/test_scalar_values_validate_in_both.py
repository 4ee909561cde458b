"""The scalar configs of tests/config/test_otelcol_scalar_decoding.py against otelcol 0.165 itself:
what it runs (fractions for whole numbers, nulls, empty variables, bare-number durations) passes `edgeagent validate`
too, and a quoted number or bool, which edgeagent takes as what it spells, is one otelcol refuses,
so taking it changes the meaning of no config otelcol runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.config.conftest import REPO_ROOT, _environment

pytestmark = pytest.mark.e2e

SCALARS = REPO_ROOT / "tests" / "testdata" / "config" / "scalars"
BOTH_RUN = ("good-fractions.yaml", "good-nulls.yaml", "good-bare-durations.yaml", "good-empty-variable.yaml")


def _otelcol_validate(binary: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), "validate", "--config", str(config)], capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)


def _edgeagent_validate(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False, env=_environment(None),
                          cwd=REPO_ROOT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("name", BOTH_RUN)
def test_scalar_values_otelcol_runs_pass_edgeagent_validate(otelcol_binary, name):
    theirs = _otelcol_validate(otelcol_binary, SCALARS / name)
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    ours = _edgeagent_validate(SCALARS / name)
    assert ours.returncode == 0, ours.stdout[-3000:] + ours.stderr[-3000:]


def test_quoted_number_and_bool_edgeagent_takes_are_refused_by_otelcol(otelcol_binary):
    theirs = _otelcol_validate(otelcol_binary, SCALARS / "good-quoted-scalars.yaml")
    assert theirs.returncode != 0 and "expected 'true' or 'false'" in theirs.stderr, theirs.stderr[-3000:]
    ours = _edgeagent_validate(SCALARS / "good-quoted-scalars.yaml")
    assert ours.returncode == 0, ours.stdout[-3000:] + ours.stderr[-3000:]
