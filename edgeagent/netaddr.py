"""A server's `transport` and `endpoint` (otelcol's confignet), and the listening socket they make.

otelcol accepts every Go network name in `transport`; edgeagent's servers listen on the stream
ones: `tcp` (the default), `tcp4` (IPv4 only), `tcp6` (IPv6 only) and `unix`, where `endpoint`
is the socket file's path (`@name`: Linux's abstract namespace, as in Go). Validation refuses
the rest, saying why: otelcol cannot serve on `udp*`, `ip*` ("unknown network" at start) or
`unixgram` (it ends at the first accept) either, nor on `npipe` outside Windows; `unixpacket` it
serves, but asyncio's servers take stream sockets only.

tcp4 and tcp6 bind as Go's net.Listen does: an empty host is every address of that family
(`0.0.0.0`, or `::` with IPV6_V6ONLY), a name binds to its first address of that family, and a
literal of the other family is an error.

A unix socket file is created with the mode the umask leaves and removed when the server stops,
as Go's (a file at the path that is no socket stays). At start, otelcol fails on any file at
the path; here a socket file that nobody listens on (left by a process that was killed) is
removed and replaced, while a socket someone listens on, or a file that is not a socket, is
still an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass

from pydantic import Field, ValidationInfo

from edgeagent.component import ComponentConfig
from edgeagent.config.types import Duration, check_endpoint, host_and_port

TRANSPORTS: tuple[str, ...] = ("tcp", "tcp4", "tcp6", "unix")
_REFUSED = {
    **dict.fromkeys(("udp", "udp4", "udp6", "ip", "ip4", "ip6", "unixgram"),
                    "a server for HTTP or gRPC needs a stream transport (otelcol cannot serve on it either)"),
    "unixpacket": "a message socket; the agent's servers take stream sockets only (use unix)",
    "npipe": "Windows named pipes exist only on Windows",
}
_SUN_PATH = 107  # bytes of a socket path Linux takes (108 with the terminating NUL)
BACKLOG = 1024


class DialerConfig(ComponentConfig):
    """confignet's `dialer`, which otelcol accepts on servers too and ignores there: only clients dial."""

    timeout: Duration = Field(0.0, ge=0)


DIALER_WARNING = "dialer has no effect on a server: only a client dials (otelcol accepts and ignores it there too)"


def check_transport(value: str) -> str:
    """Validation of `transport` (a field validator)."""
    if value in TRANSPORTS:
        return value
    why = _REFUSED.get(value, "not a transport otelcol knows")
    raise ValueError(f"transport {value!r} is not supported: {why}; use one of {list(TRANSPORTS)}")


def check_address(transport: str, endpoint: str) -> str:
    """Validation of `endpoint` for its transport: host:port, or a socket path for unix."""
    if transport != "unix":
        return check_endpoint(endpoint)
    if not endpoint:
        raise ValueError("a unix socket needs a path in endpoint")
    if len(endpoint.encode()) > _SUN_PATH:
        raise ValueError(f"the socket path {endpoint!r} is longer than the {_SUN_PATH} bytes a unix socket "
                         f"address holds; use a shorter path")
    return endpoint


def check_endpoint_field(cls: type, endpoint: str, info: ValidationInfo) -> str:
    """`endpoint` for the `transport` declared before it (a field validator; unchecked when the
    transport itself is wrong)."""
    transport = info.data.get("transport")
    return endpoint if transport is None else check_address(transport, endpoint)


@dataclass(frozen=True)
class Address:
    """Where to listen: host and port for tcp*, or a path for unix (`sock` is the bound socket)."""

    transport: str
    host: str | None = None
    port: int = 0
    path: str | None = None
    sock: socket.socket | None = None

    def describe(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"{self.transport}:{self.host}:{self.port}"


async def listen(transport: str, endpoint: str, default_port: int) -> Address:
    """The address to serve on: tcp4/tcp6 hosts resolved to one address of their family; for unix,
    the socket bound and listening (a stale socket file replaced). Raises OSError naming why not."""
    if transport == "unix":
        return Address("unix", path=endpoint, sock=unix_socket(endpoint))
    host, port = host_and_port(endpoint, default_port)
    if transport == "tcp":
        return Address("tcp", host or "0.0.0.0", port)
    family = socket.AF_INET if transport == "tcp4" else socket.AF_INET6
    if not host:
        return Address(transport, "0.0.0.0" if family == socket.AF_INET else "::", port)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        kind = "IPv4" if family == socket.AF_INET else "IPv6"
        raise OSError(f"listen {transport} {endpoint}: no {kind} address for {host!r} ({exc.strerror})") from None
    return Address(transport, str(infos[0][4][0]), port)


def close(address: Address) -> None:
    """When the server stops (or did not start): close the socket, which a server that ran closed
    already, and remove the socket file, as Go's listener does."""
    if address.sock is not None:
        address.sock.close()
    if address.path is None or address.path.startswith("@"):
        return
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(address.path).st_mode):
            os.unlink(address.path)




def unix_socket(path: str) -> socket.socket:
    """A listening socket at `path` (`@name`: in the abstract namespace)."""
    name = "\0" + path[1:] if path.startswith("@") else path
    if name == path:
        _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"listen unix {path}: {exc.strerror}") from None
    return sock


def _remove_stale(path: str) -> None:
    """A socket file nobody listens on is removed; anything else at the path stays and is an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EADDRINUSE, f"listen unix {path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:  # nobody listens: left behind by a process that ended without cleaning up
        os.unlink(path)
        return
    except OSError:
        return  # let bind report what is wrong
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"listen unix {path}: another process listens on this socket")
