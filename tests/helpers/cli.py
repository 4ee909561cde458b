"""Run `edgeagent <command>` against a state directory, as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys


def cli(state_dir, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "edgeagent", *args, "--state-dir", str(state_dir)],
                            capture_output=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr.decode()}")
    return result


def cli_json(state_dir, *args: str):
    return json.loads(cli(state_dir, *args, "--json").stdout)
