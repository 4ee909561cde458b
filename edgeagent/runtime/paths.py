"""Default locations: where the queue lives when the config does not say.

A user's data directory needs a home: $HOME, else the password database's. A process with
neither (HOME unset, a user ID no passwd entry names: `docker run --user 12345`, an arbitrary
container UID) got `~` back from os.path.expanduser, and the agent kept its queue in a directory
named `~` under its working directory, where no other command found it (and where `rm -rf ~`,
typed to remove it, removes the operator's home). There is no default then, and the agent says
what to set (Go's os.UserHomeDir fails the same way).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SYSTEM_STATE_DIR = "/var/lib/edgeagent"  # the unit's StateDirectory=edgeagent, the package's


class NoStateDirectory(Exception):
    """No state directory was given and there is no home to put one in."""


def default_state_dir(environ: Mapping[str, str] | None = None, system: str = SYSTEM_STATE_DIR) -> str:
    """$STATE_DIRECTORY under systemd; /var/lib/edgeagent as root or as the user it belongs to (the
    service's user: its commands must reach the service's queue and control socket); else the user's
    data directory (NoStateDirectory when the user has no home)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY")
    if state:
        return state.split(":")[0]
    if hasattr(os, "geteuid") and os.geteuid() in (0, _owner(system)):
        return system
    data_home = env.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):  # the XDG spec ignores a relative one
        data_home = os.path.join(_home(env), ".local", "share")
    return os.path.join(data_home, "edgeagent")


def _home(env: Mapping[str, str]) -> str:
    home = env.get("HOME", "")
    if not home:
        try:
            import pwd

            home = pwd.getpwuid(os.geteuid()).pw_dir
        except (ImportError, KeyError):
            home = ""
    if not os.path.isabs(home):
        raise NoStateDirectory(f"no state directory: HOME is not set and user {os.geteuid()} has no home directory; "
                               "give --state-dir, or set STATE_DIRECTORY (or HOME)")
    return home


def _owner(path: str) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None
