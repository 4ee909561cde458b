"""The event loop's own error reports, kept to what an operator can read.

asyncio's listeners report "socket.accept() out of system resource" for every accept() they try
while no file descriptor is free, up to the listen backlog in one go (on Linux, accept() fails with
EMFILE before it looks for a connection): a thousand tracebacks for each connection accepted at
the limit. Those are logged once a minute at most, with how many there were; asyncio then retries
the listener itself a second later, once for each of those accepts. A retry that finds the
listener closed meanwhile (a stop, a reload) fails on its socket's descriptor, -1 by then: that
is no error of anyone's, and is not reported. Every other report goes to asyncio's default handler.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

log = logging.getLogger(__name__)

_ACCEPT_FAILED = "socket.accept() out of system resource"
_LOGGED_EVERY = 60.0  # seconds


class _Handler:
    def __init__(self) -> None:
        self.failures = 0  # accepts that failed since the last log line
        self.logged = -_LOGGED_EVERY

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_FAILED:
            if not _retry_of_a_closed_listener(context):
                loop.default_exception_handler(context)
            return
        self.failures += 1
        now = time.monotonic()
        if now - self.logged >= _LOGGED_EVERY:
            log.error("a listener cannot accept connections: no file descriptor left (or no memory); it tries "
                      "again each second", extra={"error": str(context.get("exception")), "failures": self.failures})
            self.logged = now
            self.failures = 0


def _retry_of_a_closed_listener(context: dict[str, Any]) -> bool:
    """Whether the report is of asyncio's listener retry (a timer calling the loop's `_start_serving`
    with the listening socket) that found the socket closed (its descriptor -1)."""
    handle = context.get("handle")
    if getattr(getattr(handle, "_callback", None), "__name__", "") != "_start_serving":  # asyncio's handle
        return False
    args: tuple[Any, ...] = getattr(handle, "_args", ())  # (protocol factory, socket, ...)
    return len(args) > 1 and isinstance(args[1], socket.socket) and args[1].fileno() == -1


def install(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_exception_handler(_Handler())
