"""Loopback ports for tests."""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable, Iterator

_HANDED_OUT: set[int] = set()
# Every test process (each pytest-xdist worker, each concurrent test run) takes a one-byte POSIX lock
# at offset `port` of this file for each port it hands out. The kernel drops a process's locks when
# it exits, so nothing is left to clean up, and a port stays with the process that took it.
_RESERVATIONS = os.path.join(tempfile.gettempdir(), "edgeagent-test-ports.lock")
_reservations_fd: int | None = None
_LOWEST = 10_000


def _reserve(port: int) -> bool:
    global _reservations_fd
    if _reservations_fd is None:
        # never closed: closing any descriptor of the file would drop every lock this process holds
        _reservations_fd = os.open(_RESERVATIONS, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(_reservations_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
    except OSError:
        return False  # another test process handed this port out
    return True


def _candidates() -> Iterator[int]:
    """Ports below the kernel's ephemeral range, from a random start: neither an outgoing connection
    nor a bind to port 0, in any process, is given one of them between our check and the agent's
    bind. Where that range is empty, ports the kernel picks as free."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            ephemeral_low = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 0
    if ephemeral_low - _LOWEST >= 1000:
        start = random.randrange(_LOWEST, ephemeral_low)
        yield from range(start, ephemeral_low)
        yield from range(_LOWEST, start)
        return
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            yield sock.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port that is free now and that no test process has handed out before: two agents,
    or an agent's gRPC and HTTP receivers, never get one port between them, in one process or in two
    xdist workers."""
    for port in itertools.islice(_candidates(), 5000):
        if port not in _HANDED_OUT and _bindable(port) and _reserve(port):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port left that was not handed out already")


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05,
               message: str = "condition") -> None:
    """Poll `predicate` until it is true; bounded in time. Used only by tests, never by the agent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def link_local() -> str | None:
    """An IPv6 link-local address of this host with its zone (`fe80::...%eth0`), None without one.
    A connection to it stays on the host, as one to loopback does."""
    try:
        with open("/proc/net/if_inet6") as table:
            rows = [line.split() for line in table]
    except OSError:
        return None
    for address, _, _, scope, _, interface in rows:
        if scope == "20":  # IPV6_ADDR_LINKLOCAL
            return f"{socket.inet_ntop(socket.AF_INET6, bytes.fromhex(address))}%{interface}"
    return None

