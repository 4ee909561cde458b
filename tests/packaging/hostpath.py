"""The init container that hands a hostPath queue to the agent's user, run here as the kubelet runs
it: as root with only the capabilities its securityContext adds, over the node's state directory
as an earlier agent pod left it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from edgeagent.queue.environment import private_directory
from tests.packaging.tools import require


def left_by_an_agent(state_dir: Path, uid: int, gid: int, mode: int) -> None:
    """The state directory (`mode`: as the kubelet or the init container left it) after an agent ran
    on the node: its queue directory private (0700, as file_storage makes it) with a 0600 data file,
    all the agent's user's."""
    queue = state_dir / "queue"
    private_directory(str(queue))
    data = queue / "data.mdb"
    data.write_bytes(b"")
    data.chmod(0o600)
    for path in (state_dir, queue, data):
        os.chown(path, uid, gid)
    state_dir.chmod(mode)


def run_init_container(container: dict, volume: str, state_dir: Path) -> subprocess.CompletedProcess:
    """`container`'s command with the volume's mount path mapped to `state_dir`, as uid 0 holding
    only the capabilities the container adds (the container drops ALL)."""
    setpriv = require("setpriv", "apt-get install -y util-linux")
    if os.geteuid() != 0:
        pytest.skip("running a command as root with chosen capabilities needs root (CI runs as root)")
    (mount,) = [mount["mountPath"] for mount in container["volumeMounts"] if mount["name"] == volume]
    security = container["securityContext"]
    assert security["runAsUser"] == 0 and security["capabilities"]["drop"] == ["ALL"]
    caps = "".join(f",+{cap.lower()}" for cap in security["capabilities"].get("add", []))
    command = [part.replace(mount, str(state_dir)) for part in container["command"]]
    return subprocess.run([setpriv, "--reuid=0", "--regid=0", "--clear-groups", "--inh-caps=-all",
                           f"--bounding-set=-all{caps}", "--", *command], capture_output=True, text=True, timeout=30)
