"""Default locations: where the queue lives when the config does not say."""

from __future__ import annotations

import os
from collections.abc import Mapping

SYSTEM_STATE_DIR = "/var/lib/edgeagent"  # the unit's StateDirectory=edgeagent, the package's


def default_state_dir(environ: Mapping[str, str] | None = None, system: str = SYSTEM_STATE_DIR) -> str:
    """$STATE_DIRECTORY under systemd; /var/lib/edgeagent as root or as the user it belongs to (the
    service's user: its commands must reach the service's queue and control socket); else the user's
    data directory."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY")
    if state:
        return state.split(":")[0]
    if hasattr(os, "geteuid") and os.geteuid() in (0, _owner(system)):
        return system
    data_home = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "edgeagent")


def _owner(path: str) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None
