"""Made once per run for the packaging tests: the dependencies' wheels; the Dockerfile's wheel, installed;
helm, built."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.helpers.once import once_per_run
from tests.packaging import dockerfile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> dict[str, str]:
    """The environment under which pip takes the project's dependencies and build backend from wheels
    downloaded once per run, without asking the index: the image's wheel steps and the .deb build both
    install them, and asking the index cost each of them more than its own work."""
    return {"PIP_FIND_LINKS": str(once_per_run(tmp_path_factory, "wheelhouse", _download)), "PIP_NO_INDEX": "1"}


def _download(wheels: Path) -> Path:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(wheels),
                             *requirements], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return wheels


@pytest.fixture(scope="session")
def installed(tmp_path_factory, wheelhouse) -> Path:
    """The Dockerfile's wheel steps, daemonless: its COPY lines into a clean directory, its RUN lines
    there with /wheels and /opt/edgeagent mapped to local directories. Returns the virtualenv, made once
    per run (a quarter of a minute) and shared by the workers: the tests only run what it holds. Only
    the builder's `pip wheel` takes the wheelhouse: pip would add it to the final step's --find-links,
    which must find everything in /wheels alone."""
    return once_per_run(tmp_path_factory, "image", lambda base: _install(base, wheelhouse))


def _install(base: Path, wheelhouse: dict[str, str]) -> Path:
    steps = dockerfile.instructions((ROOT / "Dockerfile").read_text())
    context, wheels, venv = base / "src", base / "wheels", base / "opt-edgeagent"
    copied = dockerfile.lay_out_context([step for step in steps if step.stage == 0], context)
    assert "pyproject.toml" in copied and not any(path.startswith("tests/") for path in copied)
    commands = dockerfile.wheel_commands(steps, {"/wheels": str(wheels), "/opt/edgeagent": str(venv)},
                                         {"pip": [sys.executable, "-m", "pip"], "python": [sys.executable]})
    assert len(commands) == 3, commands  # pip wheel; python -m venv; pip install
    env = {**os.environ, "PYTHONPATH": ""}
    started = time.monotonic()
    for command in commands:
        builder = "wheel" in command
        result = subprocess.run(command, cwd=context, env={**env, **wheelhouse} if builder else env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    print(f"wheel built and installed in {time.monotonic() - started:.1f}s")
    return venv


HELM_VERSION = "v4.3.2"


@pytest.fixture(scope="session")
def helm() -> str:
    """helm, built once with `go install` into a cache outside the repository and reused by later runs."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeagent-tools" / f"helm-{HELM_VERSION}"
    binary = cache / "helm"
    if binary.exists():
        return str(binary)
    go = shutil.which("go")
    if go is None:
        pytest.skip(f"Go is not installed: the helm tests build helm {HELM_VERSION} with `go install`")
    cache.mkdir(parents=True, exist_ok=True)
    # every xdist worker (and any other run on the machine) would build it at once: one builds, the rest wait
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if binary.exists():
            return str(binary)
        staging = cache / "staging"  # renamed into place whole: a reader without the lock never sees half a file
        result = subprocess.run([go, "install", f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"], capture_output=True,
                                text=True, timeout=1800, env={**os.environ, "GOBIN": str(staging)})
        assert result.returncode == 0 and (staging / "helm").exists(), result.stderr[-3000:]
        os.replace(staging / "helm", binary)
    return str(binary)
