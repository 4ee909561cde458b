"""Default locations: where the queue lives when the config does not say."""

from __future__ import annotations

import os
from collections.abc import Mapping


def default_state_dir(environ: Mapping[str, str] | None = None) -> str:
    """$STATE_DIRECTORY under systemd, /var/lib/edgeagent as root, else the user's data directory."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY")
    if state:
        return state.split(":")[0]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/edgeagent"
    data_home = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "edgeagent")
