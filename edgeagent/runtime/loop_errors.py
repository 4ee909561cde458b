"""The agent's event loop, and its own error reports kept to what an operator can read.

asyncio's listeners report "socket.accept() out of system resource" for an accept() that fails
while no file descriptor is free (on Linux, accept() fails with EMFILE before it looks for a
connection), stop listening and try again a second later. Up to Python 3.13 the accept loop went
on after that failure, up to the listen backlog (1,024 here), and scheduled a retry for each:
a thousand tracebacks for each connection accepted at the limit, and retries that each started
such a burst again a second later, so that the failed accepts grew from second to second (10,000
a second after 20 s, and 40 % of a core, growing). The agent's loop (event_loop.py) stops the burst at the first
failure, as CPython's fix does (gh-151615), and tries again as Go's servers do (otelcol's among
them): 5 ms after a failure that follows an accept, twice as long after each failure in a row,
a second at most. A descriptor freed again is used at once: a fixed second let an agent one
descriptor short of its limit accept one connection a second, however many waited.

The reports are logged once a minute at most, with how many there were, and counted
(`accept_failures`, served as edgeagent_listener_accept_failures). A retry that finds the
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

ACCEPT_FAILED = "socket.accept() out of system resource"
_LOGGED_EVERY = 60.0  # seconds
_failed_accepts = 0  # since the process started, on every loop


def accept_failures() -> int:
    """accept() calls that failed for want of a descriptor (or memory) since the process started."""
    return _failed_accepts


class _Handler:
    def __init__(self) -> None:
        self.failures = 0  # accepts that failed since the last log line
        self.logged = -_LOGGED_EVERY

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            if not _retry_of_a_closed_listener(context):
                loop.default_exception_handler(context)
            return
        global _failed_accepts
        _failed_accepts += 1
        self.failures += 1
        now = time.monotonic()
        if now - self.logged >= _LOGGED_EVERY:
            log.error("a listener cannot accept connections: no file descriptor left (or no memory); it tries "
                      "again within a second",
                      extra={"error": str(context.get("exception")), "failures": self.failures})
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
