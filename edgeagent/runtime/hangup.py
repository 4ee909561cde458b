"""Signals before the event loop takes them over: held, not fatal, not lost.

Python leaves SIGHUP at its default action, which ends the process, until the event loop takes
it over; a SIGHUP in that half second of start-up (a config tool that changed the file as the
agent started) killed the agent, and systemd counts death by SIGHUP as a clean exit, so
Restart=on-failure did not bring it back. So `run` holds it from its first step, and reloads
once it is up when one came.

As a container's PID 1 the agent has the opposite trouble with SIGTERM: the kernel drops a signal
PID 1 has no handler for, so a stop in that half second was lost and the agent ran on until the
SIGKILL. There `run` holds SIGTERM too, and stops before it starts when one came.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

_held = False
_stop = False


def _hold(signum: int, frame: FrameType | None) -> None:
    global _held
    _held = True


def _hold_stop(signum: int, frame: FrameType | None) -> None:
    global _stop
    _stop = True


def hold() -> None:
    """From now until the loop takes SIGHUP over, one is held (and asks for a reload); as PID 1,
    SIGTERM too (and asks for a stop)."""
    signal.signal(signal.SIGHUP, _hold)
    if os.getpid() == 1:  # elsewhere SIGTERM's default action ends the process, as it should
        signal.signal(signal.SIGTERM, _hold_stop)


def release() -> None:
    """Back to the default actions (for the verbs other than `run`: a closed terminal ends them)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def take() -> bool:
    """Whether a SIGHUP came while held (once)."""
    global _held
    came, _held = _held, False
    return came


def stopped() -> bool:
    """Whether a SIGTERM came while held."""
    return _stop
