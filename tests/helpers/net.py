"""Loopback ports for tests."""

from __future__ import annotations

import socket


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and that this test process has not handed out before:
    the kernel may give the same ephemeral port to two binds in a row, and an agent whose gRPC and
    HTTP receivers got one port between them fails to start."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port left that was not handed out already")


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition") -> None:
    """Poll `predicate` until it is true; bounded in time. Used only by tests, never by the agent."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
