"""systemd's notify protocol (sd_notify) without a dependency: one datagram per message.

With `Type=notify` systemd waits for READY=1 before it considers the service started, kills
it when WATCHDOG=1 stops arriving for `WatchdogSec`, and shows STATUS= in `systemctl status`.
Everything is a no-op when NOTIFY_SOCKET is not set (not started by systemd).

All notifications go through one socket, opened with the first and kept: a socket opened for
each failed while every descriptor was taken (idle client connections up to the open-file
limit), and systemd killed the agent once WatchdogSec passed without a WATCHDOG=1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)
_socket: socket.socket | None = None


def _sender() -> socket.socket:
    """The socket notifications are sent from, unconnected (each names the address)."""
    global _socket
    if _socket is None:
        # never blocking: it runs on the event loop, and a reader that stopped reading would stop the agent
        _socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    return _socket


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one notification; returns whether there was a socket to send it to."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        _sender().sendto(message.encode(), address)
        return True
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)
        return False


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC in seconds, when the watchdog is meant for this process."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.05)
    except ValueError:
        return None


# what a stop takes after a drain (pending commits, leases returned, stores closed): the unit's TimeoutStopSec
STOP_AFTER_DRAIN = 20.0


class Notifier:
    def __init__(self) -> None:
        self._watchdog: asyncio.Task | None = None

    def reloading(self) -> None:
        """systemd's Type=notify-reload protocol: RELOADING=1 with the monotonic time, then READY=1."""
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def ready(self, status: str = "") -> None:
        notify("READY=1" + (f"\nSTATUS={status}" if status else ""))
        interval = watchdog_interval()
        if interval is not None and self._watchdog is None:
            # pinged from the event loop itself: a blocked loop stops the pings and systemd restarts us
            self._watchdog = asyncio.create_task(self._ping(interval), name="systemd-watchdog")

    async def _ping(self, interval: float) -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def draining(self, seconds: float) -> None:
        """A drain of up to `seconds` begins: systemd waits that long past the unit's TimeoutStopSec
        (EXTEND_TIMEOUT_USEC never shortens it), plus STOP_AFTER_DRAIN for the stop that follows."""
        usec = int((seconds + STOP_AFTER_DRAIN) * 1e6)
        notify(f"EXTEND_TIMEOUT_USEC={usec}\nSTATUS=draining the queues upstream")

    async def stopping(self) -> None:
        notify("STOPPING=1\nSTATUS=draining to disk")
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
