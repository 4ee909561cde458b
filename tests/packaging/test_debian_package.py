"""The .deb builds, lintian finds no errors, and it installs, runs, upgrades, removes and purges in a throwaway
Debian root."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.once import once_per_run
from tests.packaging.tools import find, require

ROOT = Path(__file__).resolve().parents[2]


def _mirror() -> str | None:
    """The Debian mirror this machine's apt already uses (the repository names none)."""
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if path.exists():
            match = re.search(r"(?:URIs:|^deb)\s+(\S+/debian)\b", path.read_text(), re.M)
            if match:
                return match.group(1)
    return None


@dataclass
class Bootstrap:
    """debootstrap making `root`, under way in the background."""

    root: Path
    process: subprocess.Popen

    def wait(self) -> Path:
        assert self.process.wait(900) == 0, (self.root.parent / "debootstrap.log").read_text(errors="replace")[-6000:]
        return self.root


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory) -> Iterator[Bootstrap | None]:
    """debootstrap of the install test's throwaway root, asked for before the package so that it
    downloads while the package builds (each takes most of a minute); None where that test skips.
    Only that test asks: a worker running the module's other tests makes no root it would kill unused."""
    debootstrap, mirror = find("debootstrap"), _mirror()
    if debootstrap is None or mirror is None or os.geteuid() != 0:
        yield None
        return
    root = tmp_path_factory.mktemp("debian") / "root"
    _mount_tmpfs(root)
    with open(root.parent / "debootstrap.log", "wb") as log:
        process = subprocess.Popen([debootstrap, "--variant=minbase", "--include=python3,adduser", "bookworm",
                                    str(root), mirror], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # its own process group: its downloads end with it
    yield Bootstrap(root, process)
    if process.poll() is None:  # the install test did not wait for it (deselected, or failed before)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    # debootstrap mounts /proc in the root while it installs, and unmounts it only when it finishes; then
    # the root's own tmpfs, if it has one, which frees its memory
    for target in reversed([line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]):
        if target == str(root) or target.startswith(f"{root}/"):
            subprocess.run(["umount", "--lazy", target], capture_output=True, timeout=30, check=False)


def _mount_tmpfs(root: Path) -> None:
    """The root in memory where the system allows it: dpkg syncs every file it unpacks to disk, which
    for the root's hundred packages cost a fifth of debootstrap's CPU time and a third of its wall time,
    and the root is thrown away at the end (unmounting it frees the memory). Elsewhere, on disk."""
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(root)], capture_output=True, timeout=30,
                   check=False)


@pytest.fixture(scope="module")
def package(tmp_path_factory, request) -> Path:
    require("dpkg-deb", "apt-get install -y dpkg")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("Debian's python3 is needed to build the package")
    # the run's wheelhouse holds wheels for this interpreter's version; for another, pip asks the index
    debian = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
                            capture_output=True, text=True, timeout=60).stdout.strip()
    pip_env = request.getfixturevalue("wheelhouse") if debian == str(sys.version_info[:2]) else {}
    return once_per_run(tmp_path_factory, "deb", lambda out: _build(out, pip_env))  # minutes: not once per worker


def _build(out: Path, pip_env: dict[str, str]) -> Path:
    # xz still, at its fastest level: the members hold the same files, and at the default level (6)
    # compressing them was two thirds of the build's CPU time (21 s; 2.5 s at level 1, 19% larger)
    env = {**os.environ, **pip_env, "DPKG_DEB_COMPRESSOR_LEVEL": "1"}
    result = subprocess.run(["bash", str(ROOT / "packaging" / "debian" / "build.sh"), str(out)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    deb = Path(result.stdout.strip().splitlines()[-1])
    assert re.fullmatch(r"edgeagent_\d+\.\d+\.\d+_[a-z0-9]+\.deb", deb.name)
    print(f"built {deb.name}: {deb.stat().st_size / 2**20:.1f} MiB")
    return deb


def test_lintian_reports_no_errors(package):
    lintian = require("lintian", "apt-get install -y lintian")
    result = subprocess.run([lintian, "--tag-display-limit", "0", str(package)], capture_output=True, text=True,
                            timeout=600)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "\n".join(errors[:20])
    warnings = [line for line in result.stdout.splitlines() if line.startswith("W:")]
    assert not warnings, "\n".join(warnings[:20])


def test_the_virtualenv_runs_on_the_python_version_it_was_built_for(package, tmp_path):
    """The virtualenv's modules and compiled extensions are for one Python version: an interpreter link
    to /usr/bin/python3 ran the next Debian release's python3 (3.11 to 3.13) on them after an upgrade,
    which found no edgeagent and the service failed to start, while the package still declared itself
    satisfied."""
    subprocess.run(["dpkg-deb", "-x", str(package), str(tmp_path)], check=True, timeout=120)
    (lib,) = (tmp_path / "opt/edgeagent/lib").iterdir()  # python3.11
    for link in (tmp_path / "opt/edgeagent/bin").glob("python*"):
        target = os.readlink(link)
        while not target.startswith("/"):  # python -> python3 -> /usr/bin/...: inside the package, then out
            target = os.readlink(link.parent / target)
        assert target == f"/usr/bin/{lib.name}", f"{link.name} runs {target}"
    depends = subprocess.run(["dpkg-deb", "--field", str(package), "Depends"], capture_output=True, text=True,
                             timeout=60).stdout
    assert lib.name in [word.strip().split(" ")[0] for word in depends.split(",")], depends


def test_package_installs_upgrades_keeping_queue_and_config_removes_and_purges_in_a_debian_root(debian_root, package):
    require("debootstrap", "apt-get install -y debootstrap")
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root (CI runs as root)")
    if debian_root is None:
        pytest.skip("no Debian mirror configured for apt")
    root = debian_root.wait()
    shutil.copy(package, root / "tmp" / package.name)

    def chroot(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", str(root), *command], capture_output=True, text=True, timeout=120)

    installed = chroot("dpkg", "-i", f"/tmp/{package.name}")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert chroot("edgeagent", "version").stdout.startswith("edgeagent ")
    valid = chroot("edgeagent", "validate", "--config", "/etc/edgeagent/config.yaml")
    assert valid.returncode == 0, valid.stderr
    assert chroot("getent", "passwd", "edgeagent").returncode == 0
    assert (root / "var/lib/edgeagent").is_dir()
    assert oct((root / "etc/edgeagent/edgeagent.env").stat().st_mode & 0o777) == "0o600"
    conffiles = chroot("dpkg-query", "--showformat=${Conffiles}", "--show", "edgeagent").stdout
    assert "/etc/edgeagent/config.yaml" in conffiles and "/etc/edgeagent/edgeagent.env" in conffiles
    assert (root / "lib/systemd/system/edgeagent.service").exists()

    # what a running agent and an administrator leave: a queue of the service user's, an edited config
    user = root / "var/lib/edgeagent"
    queue = user / "queue"
    queue.mkdir(mode=0o700)
    (queue / "data.mdb").write_bytes(b"queued")
    owner = (user.stat().st_uid, user.stat().st_gid)
    for path in (queue, queue / "data.mdb"):
        os.chown(path, *owner)
    config = root / "etc/edgeagent/config.yaml"
    config.write_text(config.read_text() + "# edited on this host\n")
    upgraded = chroot("dpkg", "-i", f"/tmp/{package.name}")  # configure with the old version: an upgrade
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert config.read_text().endswith("# edited on this host\n"), "an upgrade must keep the edited config"
    assert (queue / "data.mdb").read_bytes() == b"queued", "an upgrade must keep the queue"
    assert {(p.stat().st_uid, p.stat().st_gid) for p in (user, queue, queue / "data.mdb")} == {owner}

    assert chroot("dpkg", "-r", "edgeagent").returncode == 0
    assert queue.is_dir(), "remove must keep the queue"
    assert config.exists() and chroot("getent", "passwd", "edgeagent").returncode == 0
    assert chroot("dpkg", "--purge", "edgeagent").returncode == 0
    assert not user.exists(), "purge removes the queue"
    assert not (root / "etc/edgeagent").exists(), "purge removes the config"
