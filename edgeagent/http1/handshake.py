"""A TLS listener's connections up to their handshake: plain HTTP gets Go's answer, the rest TLS.

Go's server answers a connection whose first TLS record header reads as the start of an HTTP
request ("GET /", "HEAD ", "POST ", "PUT /" or "OPTIO": net/http's tlsRecordHeaderLooksLikeHTTP)
with PLAIN_HTTP_ANSWER, unencrypted, and closes it; anything else that is no TLS is closed
without a word. asyncio's TLS listener closes both unanswered, so a client given http:// where
it needed https:// learnt nothing of why.

So a TLS listener listens in plain TCP, and each connection's socket is taken from its transport
before a byte is read (a duplicate of its descriptor; the transport is dropped). Its first byte
is peeked (MSG_PEEK), not read: a TLS record starts with a byte below 0x20, none of "GHPO", and
a TLS client's bytes are left whole for `loop.connect_accepted_socket`, which runs the handshake
as asyncio's listener runs it. A connection starting with one of "GHPO" is no TLS: it is read
in plain text, and answered if its first five bytes are one of Go's five. The wait for the first
bytes and the handshake are bounded together by the handshake timeout, as in Go.

With no descriptor left for the duplicate (EMFILE: accept() took the last one), the connection
is closed at once, so that its client sees it and may try again instead of waiting on a
connection nobody reads; said once a minute at most, with how many were closed.

The gRPC receiver's listener is one too, without the plain-HTTP answer (`answer_plain_http`
False: grpc-go's TLS handshake closes such a connection unanswered). A failed handshake's error
carries, in its traceback's frames, the future that holds it and the connection's TLS state with
asyncio's 256 kB read buffer: a reference cycle that only the cycle collector undid, which a
serving agent runs rarely (lean.py), so clients that keep failing their handshakes (the wrong
CA, a scanner) held about 330 kB each, 66 MiB for 200. Here the error is caught, and its frames
are cleared, which undoes the cycle at once. (asyncio's own TLS listener, which the gRPC
receiver used, keeps it: measured on Python 3.11.7.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)

PLAIN_HTTP_ANSWER = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
_HTTP_STARTS = frozenset((b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO"))
_REFUSALS_LOGGED_EVERY = 60.0  # seconds


class TLSPort:
    """Serves `protocol` over TLS on the connections of a plain listener made with `accept` as its
    protocol factory; `pending` holds the connections not handed on yet (cancel them at stop)."""

    def __init__(self, protocol: Callable[[], asyncio.Protocol], context: ssl.SSLContext, timeout: float,
                 linger: float, pending: set[asyncio.Task[None]], answer_plain_http: bool = True):
        self.protocol = protocol
        self.context = context
        self.timeout = timeout
        self.linger = linger
        self.pending = pending
        self.answer_plain_http = answer_plain_http
        self._refused = 0  # connections closed for want of a descriptor since the last log line
        self._refusal_logged = -_REFUSALS_LOGGED_EVERY

    def accept(self) -> asyncio.Protocol:
        return _Taker(self._take)

    def _take(self, transport: asyncio.Transport) -> None:
        try:
            sock: socket.socket = transport.get_extra_info("socket").dup()
        except OSError as exc:
            transport.abort()
            self._refuse(exc)
            return
        transport.abort()  # closes its descriptor only: the connection lives on in `sock`
        task = asyncio.get_running_loop().create_task(self._begin(sock))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def _refuse(self, error: OSError) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= _REFUSALS_LOGGED_EVERY:
            log.warning("closed a TLS connection at once: no file descriptor left to take it over; its client may "
                        "try again", extra={"error": str(error), "connections": self._refused})
            self._refusal_logged = now
            self._refused = 0

    async def _begin(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        owned = True
        try:
            async with asyncio.timeout(self.timeout):
                first = await _peek(loop, sock)
                if not first:
                    return
                if first in b"GHPO" and self.answer_plain_http:
                    await self._plain(loop, sock)
                    return
                owned = False  # the transport made from it closes it, whatever happens
                await loop.connect_accepted_socket(self.protocol, sock, ssl=self.context,
                                                   ssl_handshake_timeout=self.timeout)
        except (TimeoutError, OSError) as exc:  # slow, gone, or no TLS: closed, as asyncio's listener does
            traceback.clear_frames(exc.__traceback__)  # the cycle through the error's frames (module note)
        finally:
            if owned:
                sock.close()

    async def _plain(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        start = b""
        while len(start) < 5:  # five reads at most; all that came, as Go reads it (no reset at the close)
            data = await loop.sock_recv(sock, 65536)
            if not data:
                return
            start += data
        if start[:5] not in _HTTP_STARTS:
            return
        await loop.sock_sendall(sock, PLAIN_HTTP_ANSWER)
        # Go closes at once; with the request's rest unread that is a reset, which can discard
        # the answer before the client reads it: half-close, and read until the client closes
        sock.shutdown(socket.SHUT_WR)
        try:
            async with asyncio.timeout(self.linger):
                while await loop.sock_recv(sock, 65536):
                    pass
        except TimeoutError:
            pass


class _Taker(asyncio.Protocol):
    def __init__(self, take: Callable[[asyncio.Transport], None]):
        self._take = take

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._take(transport)


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """The connection's first byte, left unread; b"" when it closed before one."""
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await readable
    finally:
        loop.remove_reader(sock.fileno())
    return sock.recv(1, socket.MSG_PEEK)
