"""The agent's event loop: asyncio's, with the name lookups and connects of every client in the
process made as Go's dialer makes them, the libraries' too (aiokafka's brokers).

- `getaddrinfo` runs on threads of its own, one lookup of a name at a time (`edgeagent.lookup`),
  never on the default executor, whose threads read the queues: a DNS server that drops queries
  holds up the exporter that asked, not every pipeline.
- `create_connection` to a host name races its addresses when the caller did not choose: the
  next address starts 250 ms into a connect (Happy Eyeballs, RFC 8305, families interleaved), as
  Go's dialer falls back to the other family after 300 ms and grpc-go's pick_first moves on after
  250 ms. asyncio tries the addresses one after the other, each until the caller's timeout: an
  address that drops SYNs (a broker's IPv6 path that leads nowhere) was the only one ever tried,
  and the connect failed every time while the next address answered.
- Listeners out of descriptors (EMFILE) stop accepting at the first failure and try again as Go's
  servers do, 5 ms doubling to 1 s (loop_errors.py says why asyncio's own accept loop spun).
- A TLS connection reads from its socket into a buffer of about one TLS record (TLS_READ_BUFFER),
  not asyncio's 256 kB, which it allocates and writes at the connection's start: 200 idle TLS
  clients held 55 MiB, now 8 MiB (Go's TLS reads a record at a time too). Set on asyncio's class,
  for every TLS connection of the process, the libraries' too; larger bodies take more reads, at
  no cost measured.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import weakref
from asyncio import sslproto
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from edgeagent import lookup
from edgeagent.runtime import loop_errors

T = TypeVar("T")

NEXT_ADDRESS_DELAY = 0.25  # seconds into a connect that the next address starts too
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_FIRST_RETRY = 0.005  # seconds after a failed accept that followed a good one (Go's net/http)
_LAST_RETRY = 1.0  # the most, doubling from the first
TLS_READ_BUFFER = 17 * 1024  # about a TLS record: 16 KiB of data and its overhead (a larger one takes two reads)


class AgentLoop(asyncio.SelectorEventLoop):
    async def getaddrinfo(self, host: lookup.Host, port: lookup.Port, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> lookup.Found:
        return await lookup.getaddrinfo(host, port, family, type, proto, flags)

    async def create_connection(  # type: ignore[override]  # asyncio's keywords, passed on as they came
            self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str | None = None,
            port: int | None = None, **options: Any) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        arguments: dict[str, Any] = {"host": host, "port": port, **options}
        if host is not None and options.get("happy_eyeballs_delay") is None:
            arguments["happy_eyeballs_delay"] = NEXT_ADDRESS_DELAY
        return await super().create_connection(protocol_factory, **arguments)


class _AcceptingLoop(AgentLoop):
    """asyncio's selector loop, whose listeners stop accepting at the first accept() that finds no
    descriptor (or memory) and try again once, after a delay that doubles from 5 ms to 1 s while
    they keep failing."""

    def __init__(self) -> None:
        super().__init__()
        self._retries: weakref.WeakKeyDictionary[socket.socket, float] = weakref.WeakKeyDictionary()

    def _accept_connection(self, protocol_factory: Any, sock: socket.socket, sslcontext: Any = None,
                           server: Any = None, backlog: int = 100, *timeouts: Any) -> None:
        """asyncio's (3.11 to 3.13, the same in each), with the return after a failure that CPython
        added later; `timeouts` are the TLS handshake's and shutdown's, handed on as they came."""
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                self.call_exception_handler({"message": loop_errors.ACCEPT_FAILED, "exception": exc, "socket": sock})
                delay = min(2 * self._retries.get(sock, _FIRST_RETRY / 2), _LAST_RETRY)
                self._retries[sock] = delay
                # asyncio's own methods below, absent from its stubs
                self._remove_reader(sock.fileno())  # type: ignore[attr-defined]
                self.call_later(delay, self._start_serving,  # type: ignore[attr-defined]
                                protocol_factory, sock, sslcontext, server, backlog, *timeouts)
                return
            self._retries.pop(sock, None)
            self.create_task(self._accept_connection2(  # type: ignore[attr-defined]
                protocol_factory, conn, {"peername": addr}, sslcontext, server, *timeouts))


# the parameters of asyncio's methods that _AcceptingLoop's accept loop calls as it mirrors them
_MIRRORED = {
    "_accept_connection": ["protocol_factory", "sock", "sslcontext", "server", "backlog", "ssl_handshake_timeout",
                           "ssl_shutdown_timeout"],
    "_start_serving": ["protocol_factory", "sock", "sslcontext", "server", "backlog", "ssl_handshake_timeout",
                       "ssl_shutdown_timeout"],
    "_accept_connection2": ["protocol_factory", "conn", "extra", "sslcontext", "server", "ssl_handshake_timeout",
                            "ssl_shutdown_timeout"],
}


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An _AcceptingLoop where this Python's asyncio has the methods it mirrors (3.11 to 3.13), else
    an AgentLoop with asyncio's own accept loop (a later asyncio may take other arguments, or have
    the fix itself)."""
    import inspect  # once, at start

    sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    for name, parameters in _MIRRORED.items():
        method = getattr(asyncio.SelectorEventLoop, name, None)
        if method is None or list(inspect.signature(method).parameters)[1:] != parameters:
            return AgentLoop()
    return _AcceptingLoop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the agent's loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
