"""SIGHUP before the agent can reload: held, not fatal.

Python leaves SIGHUP at its default action, which ends the process, until the event loop takes
it over; a SIGHUP in that half second of start-up (a config tool that changed the file as the
agent started) killed the agent, and systemd counts death by SIGHUP as a clean exit, so
Restart=on-failure did not bring it back. So `run` holds it from its first step, and reloads
once it is up when one came.
"""

from __future__ import annotations

import signal
from types import FrameType

_held = False


def _hold(signum: int, frame: FrameType | None) -> None:
    global _held
    _held = True


def hold() -> None:
    """From now until the loop takes SIGHUP over, one is held (and asks for a reload)."""
    signal.signal(signal.SIGHUP, _hold)


def release() -> None:
    """Back to the default action (for the verbs other than `run`: a closed terminal ends them)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def take() -> bool:
    """Whether a SIGHUP came while held (once)."""
    global _held
    came, _held = _held, False
    return came
