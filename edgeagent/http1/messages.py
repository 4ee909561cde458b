"""A request and its answer, as the HTTP/1.1 server (`server.py`) hands them to handlers.

A request's body is read by its handler, once, as it arrives (`iter_chunks`, or `read`/`json`
for a bounded whole); the server drains what the handler leaves (`drain`) before the next
request on the connection, and knows from the body's state whether that is possible.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote

from edgeagent.http1 import wire
from edgeagent.http1.wire import Headers, ProtocolError

DRAIN_LIMIT = 256 * 1024  # unread body bytes dropped to keep a connection (Go: maxPostHandlerReadBytes)
DRAIN_TIMEOUT = 2.0
READ_LIMIT = 1 << 20  # Request.read()'s default bound
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# a body's states: not touched, being read (or paused by its reader), read to its end, broken off
_FRESH, _READING, _DONE, _BROKEN = range(4)


class Response:
    """An answer: `text` is sent as UTF-8 (text/plain unless `content_type` says otherwise);
    Content-Length is always the body's, set when it is written. A `stream` is a body of unknown
    length sent as it comes, chunked (to HTTP/1.0 clients, until the connection closes): the
    server holds one piece at a time, and cuts the connection when the stream fails."""

    __slots__ = ("body", "headers", "status", "stream")

    def __init__(self, status: int = 200, body: bytes = b"", text: str | None = None,
                 content_type: str | None = None, headers: Iterable[tuple[str, str]] | dict[str, str] | None = None,
                 stream: AsyncIterator[bytes] | None = None):
        if text is not None:
            body = text.encode()
            if content_type is None:
                content_type = "text/plain; charset=utf-8"
            elif "charset" not in content_type:
                content_type += "; charset=utf-8"
        elif body and content_type is None:
            content_type = "application/octet-stream"
        self.status = status
        self.body = body
        self.stream = stream
        fields = headers.items() if isinstance(headers, dict) else headers
        self.headers = Headers(fields or ())
        if content_type is not None:
            self.headers["Content-Type"] = content_type


Handler = Callable[["Request"], Awaitable[Response]]
Middleware = Callable[["Request", Handler], Awaitable[Response]]
ResponseHook = Callable[["Request", Response], None]


class Request:
    """A request whose head has been read; its body is read by `iter_chunks`, `read` or `json`,
    once. `route` is the matched route's path ("" when none matched), `params` its `{name}`."""

    __slots__ = ("_continue", "_iterator", "_query", "_reader", "_state", "_target_query", "_writer", "content_length",
                 "headers", "method", "params", "path", "received", "remote", "route", "transport", "version")

    def __init__(self, method: str, target: str, version: tuple[int, int], headers: Headers,
                 content_length: int | None, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: str):
        self.method = method
        path, _, self._target_query = target.partition("?")
        if not path.startswith("/") and "://" in path:  # absolute-form: the path is what follows the authority
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        self.path = unquote(path) if "%" in path else path
        self._query: dict[str, str] | None = None
        self.version = version
        self.headers = headers
        self.content_length = content_length  # -1: chunked
        self.remote = remote
        self.transport = writer.transport
        self.route = ""
        self.params: dict[str, str] = {}
        self.received = 0  # body bytes read so far
        self._reader = reader
        self._writer = writer
        self._state = _DONE if content_length == 0 else _FRESH
        self._iterator: AsyncGenerator[bytes, None] | None = None
        self._continue = (content_length != 0 and version >= (1, 1)
                          and headers.get("Expect", "").lower() == "100-continue")

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters, the first value of each name."""
        if self._query is None:
            self._query = {}
            for name, value in parse_qsl(self._target_query, keep_blank_values=True):
                self._query.setdefault(name, value)
        return self._query

    @property
    def query_string(self) -> str:
        """The target's query, as sent (without its `?`)."""
        return self._target_query

    @property
    def content_type(self) -> str:
        """The media type of the body, lowercased, without parameters (application/octet-stream if none)."""
        value = self.headers.get("Content-Type", "")
        return value.partition(";")[0].strip().lower() or "application/octet-stream"

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (100 Continue is sent first when the client waits for it).
        A client that closes before the end, or whose connection breaks (a reset, a TLS failure),
        raises ConnectionResetError; a broken framing, ProtocolError."""
        if self._state != _FRESH and self._state != _DONE:
            raise RuntimeError("the request's body is being read already")
        if self._continue:
            self._continue = False
            self._writer.write(_CONTINUE)
        return self._body()

    async def read(self, limit: int = READ_LIMIT) -> bytes:
        """The whole body; more than `limit` bytes is a ProtocolError with status 413."""
        if self.content_length is not None and self.content_length > limit:
            raise ProtocolError(f"the request body of {self.content_length} bytes exceeds {limit} bytes", status=413)
        chunks = []
        async for chunk in self.iter_chunks():
            chunks.append(chunk)
            if self.received > limit:
                raise ProtocolError(f"the request body exceeds {limit} bytes", status=413)
        return b"".join(chunks)

    async def json(self, limit: int = READ_LIMIT) -> Any:
        return json.loads(await self.read(limit))

    def _body(self) -> AsyncIterator[bytes]:
        if self._state == _DONE:
            return _empty()
        if self._iterator is None:
            self._iterator = self._chunks()
        return self._iterator

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        self._state = _READING
        try:
            async for chunk in wire.iter_body(self._reader, self.content_length):
                self.received += len(chunk)
                yield chunk
        except ProtocolError as exc:
            self._state = _BROKEN
            if self._reader.at_eof():  # the client went away, not a framing the peer got wrong
                raise ConnectionResetError(str(exc)) from None
            raise
        except OSError as exc:
            self._state = _BROKEN
            if isinstance(exc, ConnectionError):
                raise
            raise ConnectionResetError(f"the connection broke: {exc}") from exc  # a TLS failure, as a reset
        except BaseException:
            self._state = _BROKEN
            raise
        self._state = _DONE

    @property
    def body_complete(self) -> bool:
        """Whether the body has been read to its end (an empty one always has)."""
        return self._state == _DONE

    async def drain(self) -> bool:
        """Whether what the handler left of the body has been read to its end, as the connection's
        next request needs; a body too large, too slow or broken is left to the connection's close."""
        if self._state == _DONE:
            return True
        if self._state == _BROKEN or self._continue:  # the client waits for a 100 Continue nobody sent
            return False
        if self.content_length is not None and self.content_length - self.received > DRAIN_LIMIT:
            return False
        dropped = 0
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                async for chunk in self._body():
                    dropped += len(chunk)
                    if dropped > DRAIN_LIMIT:
                        return False
        except (TimeoutError, ProtocolError, ConnectionError):
            return False
        return True


    async def close_body(self) -> None:
        """Close the body's iterator when a handler (or `drain`) left it suspended part way: it
        refers to the request that refers to it, and that cycle would hold the connection's
        buffered bytes until a full collection, which an idle process may not make for long."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None and self._state == _READING:
            await iterator.aclose()


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing
