"""The process's signals: held before the event loop takes them over, not fatal, not lost, not
blocked; SIGUSR1 and SIGUSR2 ignored; SIGQUIT's stacks.

Python leaves SIGHUP at its default action, which ends the process, until the event loop takes
it over; a SIGHUP in that half second of start-up (a config tool that changed the file as the
agent started) killed the agent, and systemd counts death by SIGHUP as a clean exit, so
Restart=on-failure did not bring it back. So `run` holds it from its first step, and reloads
once it is up when one came.

As a container's PID 1 the agent has the opposite trouble with SIGTERM: the kernel drops a signal
PID 1 has no handler for, so a stop in that half second was lost and the agent ran on until the
SIGKILL. There `run` holds SIGTERM too, and stops before it starts when one came.

SIGUSR1 and SIGUSR2 ended the agent too (their default action): a logrotate script's `kill -USR1`,
meant to make a daemon open its log again, stopped it. A Go program (otelcol) catches them and does
nothing; so does the agent, from its first step, and says so once for each while it runs. The
handler is Python's, not SIG_IGN, so that no program the process starts inherits the signals ignored.

A signal the process starts with blocked (a parent's signal mask, which exec keeps) stays pending
for good: SIGTERM never reached the agent, which ran on until a SIGKILL. Go unblocks the signals a
program asks for, and so does `hold`, for the signals the agent acts on.

SIGQUIT ends a Go program with the stack of every goroutine on stderr; it ended the agent (with a
core dump where the system keeps them) without a word. faulthandler writes the stack of every
thread to stderr first, from the signal handler itself, so a process whose loop is stuck in a call
still says where; then the default action ends it as before (Go exits 2 instead). As PID 1 the
kernel drops that default action, and the stacks were written while the agent ran on: there a
handler of Python's ends it with status 2 after the dump, once the main thread runs.
"""

from __future__ import annotations

import faulthandler
import os
import signal
from collections.abc import Callable
from types import FrameType

IGNORED = (signal.SIGUSR1, signal.SIGUSR2)
TAKEN = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, *IGNORED}  # what the agent handles

_held = False
_stop = False
_said: set[int] = set()  # the ignored signals said once already
_say: Callable[[int], object] | None = None
_dumping = False  # SIGQUIT's dump registered


def _hold(signum: int, frame: FrameType | None) -> None:
    global _held
    _held = True


def _hold_stop(signum: int, frame: FrameType | None) -> None:
    global _stop
    _stop = True


def _ignore(signum: int, frame: FrameType | None) -> None:
    if _say is not None and signum not in _said:
        _said.add(signum)
        try:
            _say(signum)
        except RuntimeError:  # its loop has closed since
            pass


def hold() -> None:
    """From now until the loop takes SIGHUP over, one is held (and asks for a reload); as PID 1,
    SIGTERM too (and asks for a stop). SIGUSR1 and SIGUSR2 are ignored for good, and SIGQUIT
    writes every thread's stack to stderr before it ends the process. None of them stays blocked."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, TAKEN)  # before any thread starts: each inherits it
    signal.signal(signal.SIGHUP, _hold)
    if os.getpid() == 1:  # elsewhere SIGTERM's default action ends the process, as it should
        signal.signal(signal.SIGTERM, _hold_stop)
    for signum in IGNORED:
        signal.signal(signum, _ignore)
    global _dumping
    if not _dumping:  # once: faulthandler keeps the handler it chains to from its first registration
        if os.getpid() == 1:
            signal.signal(signal.SIGQUIT, _quit)
        faulthandler.register(signal.SIGQUIT, file=2, all_threads=True, chain=True)
        _dumping = True


def _quit(signum: int, frame: FrameType | None) -> None:
    os._exit(2)  # as Go after its dump; what was acknowledged is on disk


def say_ignored(say: Callable[[int], object] | None) -> None:
    """Hand each ignored signal to `say` the first time it comes (from the signal handler: `say` must
    only schedule its work), or to nothing (None)."""
    global _say
    _say = say


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
