"""Name lookups of the clients (otlphttp, otlp, the reach watch, and through the agent's event
loop, runtime/event_loop.py, the libraries': aiokafka's): getaddrinfo on threads of their own,
one lookup of a name at a time.

- getaddrinfo blocks its thread for as long as the resolver takes: glibc waits `timeout` ×
  `attempts` for each DNS server that drops the query, 10 s per server by default. asyncio's
  `loop.getaddrinfo` runs it on the default executor, whose few threads (cores + 4) also read the
  queues and compress the requests of every pipeline: an exporter whose name did not resolve
  held all of them, and pipelines with nothing to do with that name stopped for as long.
  Here each lookup runs on a daemon thread of its own, which also leaves nothing for the
  process to wait for when it stops.
- Lookups of the same host, port and family share one while it runs (Go's resolver's
  singleflight), so the consumers and retries of an exporter start one thread between them,
  however long the resolver hangs. A caller that stops waiting (its deadline, a cancellation)
  leaves the lookup running: the next caller takes it up rather than starting another.
- Each lookup asks the system again when none is running: nothing is cached here, so a name
  whose address changed (a Service re-created, a new lease) is followed at the next connect.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

Found = list[tuple[Any, ...]]  # as socket.getaddrinfo gives them

Host = str | bytes | None
Port = str | int | bytes | None
_Key = tuple[asyncio.AbstractEventLoop, Host, Port, int, int, int, int]
_running: dict[_Key, asyncio.Future[Found]] = {}


async def getaddrinfo(host: Host, port: Port, family: int = 0, type: int = socket.SOCK_STREAM, proto: int = 0,
                      flags: int = 0) -> Found:
    """socket.getaddrinfo with these arguments, off the event loop and shared with the callers asking
    the same; raises what it raises (socket.gaierror, UnicodeError)."""
    loop = asyncio.get_running_loop()
    key = (loop, host, port, family, type, proto, flags)
    lookup = _running.get(key)
    if lookup is None:
        lookup = loop.create_future()
        _running[key] = lookup
        lookup.add_done_callback(lambda done: _finished(key, done))
        try:
            threading.Thread(target=_look_up, args=(loop, lookup, key[1:]), name=f"lookup {host!r}",
                             daemon=True).start()
        except RuntimeError as exc:  # no thread to be had: this lookup fails, not every later one
            lookup.set_exception(socket.gaierror(socket.EAI_AGAIN, f"no thread for the lookup: {exc}"))
    return await asyncio.shield(lookup)


def _look_up(loop: asyncio.AbstractEventLoop, lookup: asyncio.Future[Found],
             arguments: tuple[Host, Port, int, int, int, int]) -> None:
    try:
        found: Found | BaseException = socket.getaddrinfo(*arguments)
    except Exception as exc:  # gaierror, UnicodeError (a label IDNA cannot encode): the callers'
        found = exc
    try:
        loop.call_soon_threadsafe(_settle, lookup, found)
    except RuntimeError:  # the loop closed while the resolver hung: nobody waits any more
        pass


def _settle(lookup: asyncio.Future[Found], found: Found | BaseException) -> None:
    if lookup.done():
        return
    if isinstance(found, BaseException):
        lookup.set_exception(found)
    else:
        lookup.set_result(found)


def _finished(key: _Key, lookup: asyncio.Future[Found]) -> None:
    if _running.get(key) is lookup:
        del _running[key]
    if not lookup.cancelled():
        lookup.exception()  # retrieved: every caller may have stopped waiting
