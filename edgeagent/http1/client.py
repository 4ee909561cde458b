"""An HTTP/1.1 client on asyncio streams, for the exporters: one request at a time per connection,
connections pooled (`pool.py`), opened directly or through a proxy (`dial.py`).

What it does as Go's http.Transport does (otelcol's client):
- Redirects are not followed: a 3xx is an answer like any other (the exporter decides).
- The answer's body is read up to `max_body` bytes, decoded (`Content-Encoding` gzip, deflate or
  zstd; `Accept-Encoding: gzip, deflate` is sent), so neither a huge answer nor a compression
  bomb holds more than that; past it, up to `max_body` more of the raw body is read and
  dropped, and a body still not at its end closes the connection (Go's CopyN and Close).
- A connection is reused only when the answer was read to its end and neither side said
  `Connection: close` (an HTTP/1.0 answer needs `keep-alive`). With keep-alive off, every
  request says `Connection: close` and gets a new connection.
- The request goes out while its answer is read (Go's writeLoop beside its readLoop): a server
  may refuse a body with an early 413 or 401 and stop reading it, and that answer is returned as
  it comes, not after the write times out; the 413 is what the export chain splits on. An answer
  that came before the connection failed is the answer too: a server refusing a body and closing
  makes the kernel reset the connection under the rest of it.
- An answer that came before the request was sent in full (the kernel had not taken all of it,
  or the connection failed: then it cannot be told) closes the connection afterwards, as Go does
  not reuse it. A 2xx among them is a ClientError, where Go returns it: the server answered for
  data it had not read, and taking that as delivery could lose the data; sent again, it may at
  worst be delivered twice.
- Retry: a request that went out on a reused connection which then closed or reset before a
  single byte of the answer came is sent once more on a new connection. That is the race of a
  server closing an idle connection as the request arrives: a server closing an idle
  connection has not read the request. (One that read it and then closed without a byte of
  answer looks the same; the export chain would send that request again on the error anyway,
  so the retry adds no duplicate the chain would not make, it only spares the backoff.) A new
  connection failing so, a timeout, or an answer broken off are never retried here.
- The caller's headers are set as Go's Header.Set sets them (a name given again replaces it); a
  `Host` replaces the URL's (otelcol's `headers: {Host: ...}`); Content-Length, Transfer-Encoding
  and Trailer are the client's own, from the body: the caller's are not sent.
- `timeout` bounds the whole request: waiting for a slot, connecting, sending, the answer. A
  request given up (its timeout, or cancelled) closes its connection, as Go's Transport does;
  given up before its answer, it resets it (the pool's `reset`): Go's close lets the kernel send
  what it holds of the request, which on a slow link goes on taking the link from the next
  requests and, all there, is taken by the server: a duplicate of the request sent again.
  Not a byte of an answer by then, it also closes the idle connections to its route that were
  idle since before it was sent: a path gone silent (a NAT mapping lost, a modem attached again
  with a new address) drops the packets of every old connection without a FIN or a reset, and
  each would cost a later request its whole timeout (Go keeps them, up to its idle cap of two
  per host; the pool here keeps one per consumer). A connection that carried an answer
  meanwhile is kept.
- Errors: `ConnectError` (no connection made), `NoAnswerError` (the connection ended before a
  byte of the answer), `BrokenAnswerError` (the head of the answer came, with its status, and
  its body broke off, did not decode or did not end within the timeout), `ClientError`
  (anything else after), TimeoutError (no answer within the timeout);
  ValueError for a request that cannot be written (a header value with a line break).
- `cookies`: a jar (http.cookiejar, imported only then) keeps what `Set-Cookie` sets and sends it
  back; without, nothing is kept.
- `observe(method, url, seconds, status, error_type)` is called once per request (status 0 on
  an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from edgeagent.http1 import wire
from edgeagent.http1.dial import (
    ClientError,
    ConnectError,
    forwards,
    open_connection,
    proxy_authorization,
    url_host,
)
from edgeagent.http1.pool import Connection, Pool, PoolSettings, Route
from edgeagent.runtime import suspensions

if TYPE_CHECKING:
    from http.cookiejar import CookieJar

__all__ = ["BrokenAnswerError", "ClientError", "ConnectError", "HttpClient", "ClientSettings", "NoAnswerError",
           "PoolSettings", "Response"]

Observer = Callable[[str, SplitResult, float, int, str], None]
MAX_BODY = 64 * 1024  # otelcol's otlphttp exporter reads at most this much of an answer
_SLACK = 4096  # compressed bytes beyond max_body that still decode into max_body (block and frame headers)
_NO_BODY = (204, 304)
_MAX_1XX = 5  # informational answers to one request, as Go's Transport allows
_FRAMING = ("content-length", "transfer-encoding", "trailer")  # the client frames the body, as Go ignores these


@dataclass(frozen=True)
class ClientSettings:
    """The client's connection pool, buffers, body limit and cookies, and what observes its requests."""

    pool: PoolSettings = field(default_factory=PoolSettings)
    read_buffer: int = 2**16  # bytes of an answer buffered before reading the connection pauses
    send_buffer: int = 0  # SO_SNDBUF of each connection; 0: the system's
    max_body: int = MAX_BODY
    cookies: bool = False
    observe: Observer | None = None


@dataclass(frozen=True)
class Response:
    """An answer: its status, headers and (decoded) body."""

    status: int
    reason: str
    headers: wire.Headers
    body: bytes  # decoded, at most max_body bytes

    @property
    def content_type(self) -> str:
        """The media type alone, lower case; application/octet-stream when none is given."""
        value = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        return value or "application/octet-stream"


class NoAnswerError(ClientError):
    """The connection closed or failed before a byte of the answer arrived."""


class BrokenAnswerError(ClientError):
    """The head of the answer came, its body did not: cut short, not what its Content-Encoding
    says, broken framing, or not ended within the timeout. `status` and `headers` are the answer's:
    the server has given its verdict (Go returns the answer, and reading the body then fails)."""

    def __init__(self, message: str, status: int, headers: wire.Headers):
        super().__init__(message)
        self.status = status
        self.headers = headers


class HttpClient:
    def __init__(self, settings: ClientSettings):
        self.settings = settings
        self.pool = Pool(settings.pool, self._open)
        self._cookies = _Cookies() if settings.cookies else None

    async def close(self) -> None:
        self.pool.close()

    async def request(self, method: str, url: str, *, body: bytes = b"", headers: Iterable[tuple[str, str]] = (),
                      timeout: float | None = None, tls: ssl.SSLContext | None = None, server_hostname: str = "",
                      proxy: str = "") -> Response:
        """Sends one request and reads its answer; `tls` for an https URL (required there) and an
        https proxy (as Go's Transport uses its TLS config for both; the system roots without),
        `server_hostname` the name to verify instead of the URL's host."""
        parts = urlsplit(url)
        started = time.perf_counter()
        status, error = 0, ""
        heads: list[tuple[int, wire.Headers]] = []  # the final answer's head, once it came
        try:
            try:
                async with suspensions.timeout(timeout or None) as scope:
                    response = await self._send(method, parts, body, headers, tls, server_hostname, proxy,
                                                scope.when(), heads)
            except TimeoutError as exc:
                if not heads or not timeout:
                    raise
                raise BrokenAnswerError(f"the answer of {parts.netloc.rpartition('@')[2]} did not end within "
                                        f"{timeout:g}s", *heads[-1]) from exc
            status = response.status
            return response
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            if self.settings.observe is not None:
                self.settings.observe(method, parts, time.perf_counter() - started, status, error)

    async def _send(self, method: str, parts: SplitResult, body: bytes, headers: Iterable[tuple[str, str]],
                    tls: ssl.SSLContext | None, server_hostname: str, proxy: str, deadline: float | None,
                    heads: list[tuple[int, wire.Headers]]) -> Response:
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"not an http:// or https:// URL: {scheme}://{parts.hostname or ''}")
        if scheme == "https" and tls is None:
            raise ClientError("an https:// URL needs a TLS context")
        https_proxy = proxy.lower().startswith("https:")
        route = Route(scheme, url_host(parts), parts.port or (443 if scheme == "https" else 80),
                      tls if scheme == "https" or https_proxy else None, server_hostname if scheme == "https" else "",
                      proxy)
        head = self._head(method, parts, route, headers, len(body))
        for attempt in (1, 2):
            connection = await self.pool.acquire(route, fresh=attempt > 1, deadline=deadline)
            sent_at = asyncio.get_running_loop().time()
            try:
                response, reusable = await self._exchange(connection, method, head, body, heads)
            except NoAnswerError:
                self.pool.release(connection, reusable=False)
                if connection.reused and attempt == 1:
                    continue
                raise
            except asyncio.CancelledError:  # the timeout, most likely
                # before its answer: reset, so that what the kernel still holds of it is not sent on
                self.pool.release(connection, reusable=False, reset=not heads)
                if not heads and not wire.unread(connection.reader):  # not a byte of an answer: a silent path?
                    self.pool.drop_idle(route, before=sent_at)
                raise
            except BaseException:
                self.pool.release(connection, reusable=False)
                raise
            self.pool.release(connection, reusable=reusable)
            if self._cookies is not None:
                self._cookies.keep(parts, response.headers)
            return response
        raise AssertionError("unreachable")

    def _head(self, method: str, parts: SplitResult, route: Route, headers: Iterable[tuple[str, str]],
              length: int) -> bytes:
        host = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = wire.Headers([("Host", host)])
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"the header {name!r} holds a line break or a colon")  # the caller's mistake
            if name.lower() not in _FRAMING and (value or name.lower() != "host"):
                fields[name] = value  # as Go's Header.Set: a name given again replaces it; Host as req.Host
        if length or method in ("POST", "PUT", "PATCH"):
            fields.setdefault("Content-Length", str(length))
        fields.setdefault("Accept-Encoding", "gzip, deflate")
        if not self.settings.pool.keepalive:
            fields["Connection"] = "close"
        if route.scheme == "http" and forwards(route.proxy):
            target = f"http://{host}{target}"  # absolute form: the proxy forwards it
            if (credentials := proxy_authorization(route.proxy)) is not None:
                fields["Proxy-Authorization"] = credentials
        if self._cookies is not None and (cookie := self._cookies.header(parts)):
            fields["Cookie"] = cookie
        return f"{method} {target} HTTP/1.1\r\n".encode() + fields.encode() + b"\r\n"

    async def _exchange(self, connection: Connection, method: str, head: bytes, body: bytes,
                        heads: list[tuple[int, wire.Headers]]) -> tuple[Response, bool]:
        """One request and its answer on `connection`; the answer, and whether the connection may
        carry another (the final answer's head is put in `heads` as soon as it came). The request
        goes out while the answer is read, as Go's writeLoop beside its readLoop: the transport
        sends what the socket does not take at once as it drains, and an answer that comes first
        (a server refusing a body it will not read) is not kept waiting."""
        connection.writer.write(head + body)
        reader = connection.reader
        max_head = wire.MAX_HEAD  # read line by line: the buffer holds a line, not the head (as Go's bufio)
        try:
            try:
                version, status, reason, headers = await _final_head(reader, max_head)
            except OSError:
                if not wire.unread(reader):
                    raise
                # an answer came before the connection failed (an early 413, then a reset): it is the answer
                reader = _what_came(reader, self._read_limit)
                version, status, reason, headers = await _final_head(reader, max_head)
        except OSError as exc:
            raise NoAnswerError(f"the connection to {connection.route.authority} failed before an answer: "
                                f"{exc}") from exc
        except wire.ProtocolError as exc:
            raise ClientError(f"{connection.route.authority} answered what is not HTTP/1.1: {exc}") from exc
        # sent in full before the answer came, as Go's wroteRequest asks (a failed connection cannot tell)
        sent = reader is connection.reader and not connection.unsent()
        if not sent and 200 <= status < 300:
            raise ClientError(f"{connection.route.authority} answered {status} before the request was sent in full: "
                              f"not taken as delivered")
        heads.append((status, headers))
        try:
            if method == "HEAD" or status in _NO_BODY:
                content, complete = b"", True
            else:
                length = wire.body_length(headers, request=False)
                content, complete = await _read_body(reader, length, headers.get("Content-Encoding", ""),
                                                     self.settings.max_body)
                complete = complete and length is not None
        except (OSError, wire.ProtocolError) as exc:
            raise BrokenAnswerError(f"the answer of {connection.route.authority} broke off: {exc}", status,
                                    headers) from exc
        reusable = complete and sent and _keeps_alive(version, headers) \
            and not ("Content-Length" in headers and "Transfer-Encoding" in headers)  # a response splitting, maybe
        return Response(status, reason, headers, content), reusable

    @property
    def _read_limit(self) -> int:
        """The reader's buffer: a line of a head or a chunk's size line must fit in it."""
        return max(self.settings.read_buffer, wire.MAX_LINE)

    async def _open(self, route: Route, deadline: float | None) -> Connection:
        return await open_connection(route, read_limit=self._read_limit, send_buffer=self.settings.send_buffer,
                                     deadline=deadline)


def _what_came(reader: asyncio.StreamReader, limit: int) -> asyncio.StreamReader:
    """A reader of the bytes a failed connection's `reader` still holds, ended there."""
    came = asyncio.StreamReader(limit=limit)
    came.feed_data(wire.unread(reader))
    came.feed_eof()
    return came


async def _final_head(reader: asyncio.StreamReader, max_head: int) -> tuple[tuple[int, int], int, str, wire.Headers]:
    """The head of the final answer, up to _MAX_1XX informational ones skipped (Go's limit); OSError
    when the connection ended before a byte of an answer, ProtocolError when it ended after one."""
    for informational in range(_MAX_1XX + 1):
        try:
            block = await wire.read_head(reader, max_head)
        except OSError as exc:
            if informational:  # the server read the request: this is no idle connection's race
                raise wire.ProtocolError(f"the connection failed after an informational answer: {exc}") from exc
            raise
        if block is None:
            if informational:
                raise wire.ProtocolError("the connection closed after an informational answer")
            raise ConnectionResetError("the server closed the connection without answering")
        start, headers = wire.parse_head(block, unfold=True)
        version, status, reason = wire.parse_status_line(start)
        if status == 101:
            raise wire.ProtocolError("101 Switching Protocols to a request that asked for none")
        if status >= 200:
            return version, status, reason, headers
    raise wire.ProtocolError(f"more than {_MAX_1XX} informational answers")


async def _read_body(reader: asyncio.StreamReader, length: int | None, encoding: str,
                     limit: int) -> tuple[bytes, bool]:
    """The body decoded, at most `limit` bytes, and whether it was read to its end."""
    coding = encoding.strip().lower()
    keep = limit + _SLACK if coding in _DECODERS else limit
    raw = bytearray()
    complete = True
    async with contextlib.aclosing(wire.iter_body(reader, length)) as chunks:  # type: ignore[type-var]
        async for chunk in chunks:
            room = keep - len(raw)
            raw += chunk[:room]
            if len(chunk) > room:
                complete = await _discard(chunks, limit - (len(chunk) - room))
                break
    decode = _DECODERS.get(coding)
    if decode is None:  # identity, or a coding not asked for: as it came
        return bytes(raw[:limit]), complete
    try:
        return decode(bytes(raw), limit), complete
    except Exception as exc:  # zlib.error, zstd.ZstdError: the body is not what it says
        raise wire.ProtocolError(f"the body is not valid {coding}: {exc}") from exc


async def _discard(chunks: AsyncIterator[bytes], budget: int) -> bool:
    """Reads and drops up to `budget` more bytes; whether the body ended within them."""
    async for chunk in chunks:
        budget -= len(chunk)
        if budget < 0:
            return False
    return True


def _inflate(raw: bytes, limit: int, wbits: int) -> bytes:
    return zlib.decompressobj(wbits).decompress(raw, limit)


def _deflate(raw: bytes, limit: int) -> bytes:
    """`deflate` as the zlib format it means, or the raw deflate some servers send."""
    try:
        return _inflate(raw, limit, zlib.MAX_WBITS)
    except zlib.error:
        return _inflate(raw, limit, -zlib.MAX_WBITS)


def _zstd(raw: bytes, limit: int) -> bytes:
    import zstandard

    out = bytearray()
    for piece in zstandard.ZstdDecompressor().read_to_iter(raw, write_size=min(limit, 1 << 16) or 1):
        out += piece
        if len(out) >= limit:
            break
    return bytes(out[:limit])


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": lambda raw, limit: _inflate(raw, limit, 16 + zlib.MAX_WBITS),
    "x-gzip": lambda raw, limit: _inflate(raw, limit, 16 + zlib.MAX_WBITS),
    "deflate": _deflate,
    "zstd": _zstd,
}


def _keeps_alive(version: tuple[int, int], headers: wire.Headers) -> bool:
    tokens = {token.strip().lower() for value in headers.getall("Connection") for token in value.split(",")}
    if "close" in tokens:
        return False
    return version >= (1, 1) or "keep-alive" in tokens


class _Cookies:
    """A cookie jar as Go's net/http/cookiejar keeps one (IP-address hosts too)."""

    def __init__(self) -> None:
        from http.cookiejar import CookieJar  # with urllib.request below: imported only when cookies are on
        from urllib.request import Request

        self._jar: CookieJar = CookieJar()
        self._request = Request

    def header(self, parts: SplitResult) -> str | None:
        request = self._request(parts.geturl())
        self._jar.add_cookie_header(request)
        return request.get_header("Cookie")

    def keep(self, parts: SplitResult, headers: wire.Headers) -> None:
        self._jar.extract_cookies(_SetCookies(headers), self._request(parts.geturl()))  # type: ignore[arg-type]


class _SetCookies:
    """What http.cookiejar reads of an answer: `info().get_all(name)`."""

    def __init__(self, headers: wire.Headers):
        self._headers = headers

    def info(self) -> _SetCookies:
        return self

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        return self._headers.getall(name) or default
