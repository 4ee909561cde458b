"""The event loop's own error reports, kept to what an operator can read.

asyncio's listeners report "socket.accept() out of system resource" for every accept() they try
while no file descriptor is free, up to the listen backlog in one go (on Linux, accept() fails with
EMFILE before it looks for a connection): a thousand tracebacks for each connection accepted at
the limit. Those are logged once a minute at most, with how many there were; asyncio then retries
the listener itself a second later. Every other report goes to asyncio's default handler.
"""

from __future__ import annotations

import asyncio
import logging
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
            loop.default_exception_handler(context)
            return
        self.failures += 1
        now = time.monotonic()
        if now - self.logged >= _LOGGED_EVERY:
            log.error("a listener cannot accept connections: no file descriptor left (or no memory); it tries "
                      "again each second", extra={"error": str(context.get("exception")), "failures": self.failures})
            self.logged = now
            self.failures = 0


def install(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_exception_handler(_Handler())
