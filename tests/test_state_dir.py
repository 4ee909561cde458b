"""Where the CLI looks for the agent's queue and control socket when neither --state-dir nor
$STATE_DIRECTORY says (edgeagent/runtime/paths.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE_UID = 10001


def _state_dir_as(uid: int, system: Path, home: Path | None) -> str:
    """default_state_dir as user `uid` sees it (with HOME unset for None), run in `system`'s parent. The
    module stands alone (os only): a copy of it beside `system` runs, since the other user may not reach
    into the checkout (a clone in a private directory)."""
    shutil.copy(ROOT / "edgeagent" / "runtime" / "paths.py", system.parent / "state_paths.py")
    code = f"from state_paths import default_state_dir; print(default_state_dir(system={str(system)!r}))"
    env = {"PYTHONPATH": str(system.parent), "PATH": os.environ.get("PATH", ""),
           **({} if home is None else {"HOME": str(home)})}
    result = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, "-c",
                             code], env=env, capture_output=True, text=True, timeout=30, cwd=system.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.e2e  # runs Python as two other users
def test_the_services_user_finds_the_services_state_directory():
    """The unit runs as the system user that owns /var/lib/edgeagent, and refusals tell an administrator
    to run `sudo -u edgeagent edgeagent ...`: that user's commands must reach the service's queue and
    control socket, not a directory under its home (there `status` said "not running, backlog 0"
    beside a running agent, and `queue purge` purged nothing and said so as a success)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running as another user needs root and setpriv (CI runs as root)")
    with tempfile.TemporaryDirectory() as top:  # pytest's tmp_path is private to root: other users cannot reach in
        base = Path(top)
        base.chmod(0o755)
        system = base / "var-lib-edgeagent"
        system.mkdir(mode=0o750)
        os.chown(system, SERVICE_UID, SERVICE_UID)
        assert _state_dir_as(SERVICE_UID, system, base / "service-home") == str(system)
        other = _state_dir_as(SERVICE_UID + 1, system, base / "developer")
        assert other == str(base / "developer" / ".local" / "share" / "edgeagent")


@pytest.mark.e2e  # runs Python as another user
def test_a_user_without_a_home_has_no_default_state_directory():
    """HOME unset and a user ID the password database does not name (`docker run --user 54321`): the
    default was `~/.local/share/edgeagent` taken literally, a directory named `~` in the working
    directory."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running as another user needs root and setpriv (CI runs as root)")
    uid = 54321
    try:
        import pwd

        pwd.getpwuid(uid)
        pytest.skip(f"user {uid} exists here")
    except KeyError:
        pass
    with tempfile.TemporaryDirectory() as top:
        base = Path(top)
        base.chmod(0o777)
        system = base / "var-lib-edgeagent"
        with pytest.raises(AssertionError, match="NoStateDirectory: no state directory: HOME is not set"):
            _state_dir_as(uid, system, None)
