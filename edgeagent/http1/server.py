"""A small HTTP/1.1 server on asyncio streams: what the OTLP/HTTP receiver, the health check, the
metrics endpoint and the control socket serve on.

Design note:
- One task per connection reads a request's head (wire.read_head), answers it, and only then
  reads the next: pipelined requests are answered in order, and a connection holds one request
  at a time. A request's body is read by its handler, as it needs it (`Request.iter_chunks`),
  from a reader that hands received blocks on without copying them (`stream.ChunkReader`).
- The wait for a request's head is bounded (`wait_for_request`, from the connection's start or
  the previous answer until the head is complete); a head that breaks the grammar or the limits
  gets the ProtocolError's status with a short text, and the connection closes. `write_timeout`
  (Go's WriteTimeout) bounds the time from a head to its answer written, the handler's work
  and a client slow to take the answer alike: past it the connection is cut. A TLS handshake
  gets the shorter of the two, as Go's; plain HTTP sent to a TLS listener gets Go's 400 in
  plain text (`handshake`). `write_stall_timeout` (edgeagent's own, for the control socket,
  whose handlers may rightly take long) bounds only the sending: a client whose answer's buffer
  has not shrunk for that long is cut (within twice it), however slowly it reads otherwise. The
  kernel wakes the writer only once a good part of the socket's buffer is free, so "taken" is
  seen a socket buffer at a time (a client must read ~150 KiB per timeout on a unix socket).
- Keep-alive is HTTP/1.1's default (HTTP/1.0 only with `Connection: keep-alive`). A body the
  handler left unread is read and dropped before the answer, up to DRAIN_LIMIT bytes within
  DRAIN_TIMEOUT, as Go's net/http does; beyond, the answer says `Connection: close`. A connection
  closed with input possibly unread (a body not read to its end, or bytes pipelined after the
  request) is half-closed first and read until the client closes (at most LINGER seconds), so
  its answer is not lost to a reset.
- Routing is exact paths plus one `{name}` segment form; an unknown path gets 404 (or the
  `otherwise` handler's answer), a known one (unless it has an `any`-method route)
  with another method 405 with Allow, HEAD is served by the GET route without the body. Every
  answer from the router or a handler passes through the middlewares (outermost first) and then
  the `on_response` hooks. A handler's exception is logged and answered 500; the connection goes on.
- Stop: stop listening, close idle connections at once, let requests in progress finish within
  the grace period, then close what is left.
- A closed connection whose client has not taken the end of its answer is aborted after the
  write timeout (LINGER without one): asyncio's close waits for that flush, and holds the
  socket, as long as the client does not read.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from urllib.parse import quote

from edgeagent.http1 import wire
from edgeagent.http1.handshake import TLSPort
from edgeagent.http1.messages import DRAIN_LIMIT, Handler, Middleware, Request, Response, ResponseHook
from edgeagent.http1.stream import ChunkReader
from edgeagent.http1.wire import ProtocolError

__all__ = ["DRAIN_LIMIT", "Handler", "Middleware", "Request", "Response", "ResponseHook", "Router", "Server"]

log = logging.getLogger(__name__)

LINGER = 1.0  # seconds a closing connection waits for the client to take its answer and close
SEND_SLICE = 1 << 20  # bytes of an answer written at a time with a write_stall_timeout (the memory it holds)
_NO_TIMEOUT = 365 * 86400.0
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})


class Router:
    """Exact paths, paths with one `{name}` segment, and, as Go's ServeMux reads a path ending in
    `/`, subtrees (every path below, the longest root winning); per path, handlers by method."""

    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Handler]] = {}
        self.patterns: list[tuple[list[str], int, str, str, dict[str, Handler]]] = []
        self.subtrees: list[str] = []  # roots, longest first

    def add(self, method: str, path: str, handler: Handler) -> None:
        segments = path.split("/")
        variables = [i for i, segment in enumerate(segments) if segment.startswith("{") and segment.endswith("}")]
        if not variables:
            self.exact.setdefault(path, {})[method] = handler
            if path.endswith("/") and path not in self.subtrees:
                self.subtrees = sorted([*self.subtrees, path], key=len, reverse=True)
            return
        if len(variables) > 1:
            raise ValueError(f"route {path!r}: one {{name}} segment at most")
        index = variables[0]
        for pattern in self.patterns:
            if pattern[3] == path:
                pattern[4][method] = handler
                return
        self.patterns.append((segments, index, segments[index][1:-1], path, {method: handler}))

    def match(self, path: str) -> tuple[str, dict[str, str], dict[str, Handler]] | None:
        """(route, params, handlers by method) of the route `path` matches."""
        handlers = self.exact.get(path)
        if handlers is not None:
            return path, {}, handlers
        segments = path.split("/")
        for pattern, index, name, route, by_method in self.patterns:
            if len(segments) == len(pattern) and segments[index] and all(
                    a == b for i, (a, b) in enumerate(zip(segments, pattern, strict=True)) if i != index):
                return route, {name: segments[index]}, by_method
        for root in self.subtrees:
            if path.startswith(root):
                return root, {}, self.exact[root]
        return None

    def redirect(self, path: str, match: str | None) -> str | None:
        """The subtree root `path` names without its `/`, which Go's ServeMux redirects to, unless
        the path has a route of its own (`match`, a subtree above it does not count)."""
        if path.endswith("/") or (match is not None and match not in self.subtrees) or path + "/" not in self.exact:
            return None
        return path + "/"

    def routes(self) -> Iterable[tuple[str, dict[str, Handler]]]:
        yield from self.exact.items()
        for _, _, _, route, by_method in self.patterns:
            yield route, by_method


def _chain(middlewares: Sequence[Middleware], handler: Handler) -> Handler:
    """`handler` wrapped in the middlewares, the first outermost."""
    for middleware in reversed(middlewares):
        handler = _wrap(middleware, handler)
    return handler


def _wrap(middleware: Middleware, inner: Handler) -> Handler:
    async def call(request: Request) -> Response:
        return await middleware(request, inner)
    return call


async def _not_found(request: Request) -> Response:
    return Response(404, text="404 page not found\n")  # Go's text


def _not_allowed(allowed: str) -> Handler:
    async def answer(request: Request) -> Response:
        return Response(405, text="Method Not Allowed\n", headers=[("Allow", allowed)])
    return answer


def _redirect(path: str, query: str) -> Handler:
    """Go's 307 to a subtree's root: a short HTML body for GET (Go's text), none for other methods."""
    location = quote(path, safe="/:@!$&'()*+,;=~") + (f"?{query}" if query else "")  # as Go escapes a path

    async def answer(request: Request) -> Response:
        if request.method == "GET":
            import html  # html.entities' tables, for a redirect a browser may follow

            return Response(307, body=f'<a href="{html.escape(location)}">Temporary Redirect</a>.\n\n'.encode(),
                            content_type="text/html; charset=utf-8", headers=[("Location", location)])
        return Response(307, headers=[("Location", location)])
    return answer


ANY_METHOD = "*"  # the route of every method the path has no handler of its own for


class Server:
    """Routes, middlewares and hooks, served on any number of listeners (`listen`) until `stop`."""

    def __init__(self, *, middlewares: Sequence[Middleware] = (), on_response: Sequence[ResponseHook] = (),
                 wait_for_request: float = 0.0, write_timeout: float = 0.0, write_stall_timeout: float = 0.0):
        self.router = Router()
        self.middlewares = list(middlewares)
        self.on_response = list(on_response)
        self.wait_for_request = wait_for_request or _NO_TIMEOUT
        self.write_timeout = write_timeout
        self.write_stall_timeout = write_stall_timeout
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._handshakes: set[asyncio.Task[None]] = set()  # TLS connections before their handshake's end
        self._handlers: dict[str, tuple[dict[str, Handler], Handler]] = {}
        self._not_found: Handler = _not_found
        self._otherwise: Handler = _not_found
        self._frozen = False
        self.closing = False

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        if self._frozen:
            raise RuntimeError("routes are added before the server listens")
        self.router.add(method, path, handler)

    def otherwise(self, handler: Handler) -> None:
        """Answer the paths no route matches with `handler` (by default, 404)."""
        if self._frozen:
            raise RuntimeError("routes are added before the server listens")
        self._otherwise = handler

    def any(self, path: str, handler: Handler) -> None:
        """Serve `path` whatever the method (the other routes of the path come first)."""
        self.add_route(ANY_METHOD, path, handler)

    def get(self, path: str, handler: Handler) -> None:
        self.add_route("GET", path, handler)

    def post(self, path: str, handler: Handler) -> None:
        self.add_route("POST", path, handler)

    async def listen(self, *, host: str | None = None, port: int = 0, sock: socket.socket | None = None,
                     path: str | None = None, ssl_context: ssl.SSLContext | None = None,
                     backlog: int = 1024) -> int:
        """Serve on `sock` (bound and listening), a unix socket at `path`, or host:port (reusing the
        address); returns the TCP port (useful with port 0), 0 for a unix socket."""
        self._freeze()
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            return asyncio.StreamReaderProtocol(ChunkReader(wire.MAX_HEAD), self._serve)

        accept: Callable[[], asyncio.Protocol] = protocol
        if ssl_context is not None:
            # Go: the shortest of the server's timeouts (asyncio's default is 60 s)
            handshake = min(self.wait_for_request, self.write_timeout or _NO_TIMEOUT)
            accept = TLSPort(protocol, ssl_context, handshake, LINGER, self._handshakes).accept
        server: asyncio.Server
        if path is not None:
            server = await loop.create_unix_server(accept, path=path)
        elif sock is not None:
            server = await loop.create_server(accept, sock=sock)
        else:
            server = await loop.create_server(accept, host, port, reuse_address=True, backlog=backlog)
        self._servers.append(server)
        name = server.sockets[0].getsockname() if server.sockets else ""
        return int(name[1]) if isinstance(name, tuple) else 0

    async def stop(self, grace: float) -> None:
        """Stop listening and close idle connections; requests in progress get `grace` seconds to be
        answered, then every connection closes."""
        self.closing = True
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        handshakes = list(self._handshakes)  # connections not served yet: closed as idle ones
        for handshake in handshakes:
            handshake.cancel()
        for task, connection in list(self._connections.items()):
            if connection.idle:
                task.cancel()
        busy = [task for task, connection in self._connections.items() if not connection.idle]
        if busy:
            await asyncio.wait(busy, timeout=grace)
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        tasks += handshakes
        if tasks:
            await asyncio.wait(tasks, timeout=LINGER + 1.0)
        for server in servers:
            await server.wait_closed()

    def _freeze(self) -> None:
        """The routes' handlers wrapped in the middlewares, once, before the first request."""
        if self._frozen:
            return
        self._frozen = True
        for route, by_method in self.router.routes():
            if "GET" in by_method:
                by_method.setdefault("HEAD", by_method["GET"])
            chained = {method: _chain(self.middlewares, handler) for method, handler in by_method.items()}
            self._handlers[route] = chained, _chain(self.middlewares, _not_allowed(", ".join(sorted(by_method))))
        self._not_found = _chain(self.middlewares, self._otherwise)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        assert isinstance(reader, ChunkReader)  # as `listen` makes it
        connection = _Connection(self, reader, writer)
        self._connections[task] = connection
        try:
            await connection.run()
        except asyncio.CancelledError:
            pass  # stopped with the server
        finally:
            del self._connections[task]
            transport = writer.transport
            unsent = not transport.is_closing() and transport.get_write_buffer_size()  # (TLS: none once closed)
            writer.close()
            if unsent:  # close waits to flush it: not for ever
                asyncio.get_running_loop().call_later(self.write_timeout or LINGER, transport.abort)

    async def respond(self, request: Request) -> Response:
        """The answer of the route that `request` matches (404, 405 when none), through the middlewares."""
        match = self.router.match(request.path)
        location = self.router.redirect(request.path, match and match[0])
        if location is not None:
            handler = _chain(self.middlewares, _redirect(location, request.query_string))
        elif match is None:
            handler = self._not_found
        else:
            request.route, request.params, _ = match
            chained, not_allowed = self._handlers[request.route]
            handler = chained.get(request.method) or chained.get(ANY_METHOD, not_allowed)
            if handler is not_allowed:
                request.route = ""
        try:
            response = await handler(request)
        except (ProtocolError, ConnectionError):
            raise
        except Exception:
            log.exception("an HTTP handler failed", extra={"method": request.method, "path": request.path})
            response = Response(500, text="500 Internal Server Error\n")
        for hook in self.on_response:
            hook(request, response)
        return response


class _Connection:
    """One client's connection: its requests, one after another."""

    __slots__ = ("idle", "reader", "remote", "server", "writer")

    def __init__(self, server: Server, reader: ChunkReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) else ""
        self.idle = True

    async def run(self) -> None:
        server = self.server
        while not server.closing:
            self.idle = True
            try:
                async with asyncio.timeout(server.wait_for_request):
                    head = await wire.read_head(self.reader)
                if head is None:
                    return
                self.idle = False
                request = self._request(head)
            except TimeoutError:
                return
            except ProtocolError as exc:
                await self._refuse(exc)
                return
            except OSError:  # reset, or a TLS failure
                return
            if not await self._answer(request):
                return

    def _request(self, head: bytes) -> Request:
        start, headers = wire.parse_head(head)
        method, target, version = wire.parse_request_line(start)
        if version >= (1, 1) and "Host" not in headers:
            raise ProtocolError("an HTTP/1.1 request needs a Host header")
        request = Request(method, target, version, headers, wire.body_length(headers, request=True),
                          self.reader, self.writer, self.remote)
        expect = headers.get("Expect")
        if expect is not None and expect.lower() != "100-continue":
            raise ProtocolError(f"unsupported Expect {expect[:40]!r}", status=417)
        return request

    async def _answer(self, request: Request) -> bool:
        """Answers `request` within the write timeout; whether the connection may take another."""
        transport = self.writer.transport
        limit = self.server.write_timeout
        # abort, not close: close waits to flush what a client that does not read never takes
        deadline = asyncio.get_running_loop().call_later(limit, transport.abort) if limit else None
        try:
            try:
                response = await self.server.respond(request)
            except ProtocolError as exc:
                await self._refuse(exc)
                return False
            except ConnectionError:  # the client went away in the middle of its body
                return False
            if transport.is_closing():  # cut at the write deadline, or closed by the client
                return False
            keep = _keeps_alive(request, response) and not self.server.closing and await request.drain()
            if response.stream is not None:
                keep = keep and request.version >= (1, 1)  # to HTTP/1.0 the close ends the body
                if not await self._send_stream(request, response, keep):
                    return False
            elif not await self._send(_encode(request, response, keep)):
                return False
        finally:
            if deadline is not None:
                deadline.cancel()
            await request.close_body()
        if not keep:
            await self._linger(not request.body_complete or self.reader.buffered > 0)
        return keep

    async def _send(self, data: bytes) -> bool:
        """Writes an answer; whether it all went. With a write stall timeout, a slice at a time, and
        a client that takes nothing for that long is cut (aborted: a close would wait for it)."""
        stall = self.server.write_stall_timeout
        view = memoryview(data)
        step = SEND_SLICE if stall else len(view)
        try:
            for start in range(0, len(view), step):
                self.writer.write(view[start:start + step])
                await (self._drained(stall) if stall else self.writer.drain())
        except TimeoutError:
            self.writer.transport.abort()
            return False
        except OSError:  # a reset, or a TLS failure the reader met
            return False
        return True

    async def _send_stream(self, request: Request, response: Response, keep: bool) -> bool:
        """Writes an answer whose body is a stream, a piece at a time; whether it all went. A stream
        that fails midway cuts the connection: the client sees the body end unfinished."""
        assert response.stream is not None
        chunked = request.version >= (1, 1)
        try:
            if not await self._send(_encode(request, response, keep)):
                return False
            if request.method == "HEAD" or response.status in _NO_BODY_STATUSES:
                return True
            async for piece in response.stream:
                # a chunk's framing sent apart from the piece, which is not copied into one more buffer
                if piece and not (await self._send(b"%x\r\n" % len(piece)) and await self._send(piece)
                                  and await self._send(b"\r\n")) if chunked else not await self._send(piece):
                    return False
            return await self._send(b"0\r\n\r\n") if chunked else True
        except Exception as exc:  # noqa: BLE001 - whatever failed, the answer cannot be finished
            log.error("an answer's body failed midway; the connection is cut", exc_info=exc,
                      extra={"path": request.path})
            self.writer.transport.abort()
            return False
        finally:
            close = getattr(response.stream, "aclose", None)
            if close is not None:
                await close()

    async def _drained(self, stall: float) -> None:
        """drain(), which waits for the buffer to run low, however slowly the client reads; but
        TimeoutError when a whole `stall` passes without the buffer shrinking (nothing taken)."""
        transport = self.writer.transport
        drain = asyncio.ensure_future(self.writer.drain())
        try:
            left = transport.get_write_buffer_size()
            while not (await asyncio.wait([drain], timeout=stall))[0]:
                if (now := transport.get_write_buffer_size()) >= left:
                    raise TimeoutError
                left = now
            drain.result()
        finally:
            drain.cancel()

    async def _refuse(self, exc: ProtocolError) -> None:
        status = exc.status
        text = f"{status} {_REASONS.get(status, 'Bad Request')}: {exc}\n"
        self.writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'Bad Request')}\r\nContent-Type: text/plain; "
                          f"charset=utf-8\r\nContent-Length: {len(text)}\r\nConnection: close\r\n\r\n{text}"
                          .encode("latin-1", "replace"))
        await self._linger(True)

    async def _linger(self, unread: bool) -> None:
        """Before the close: with input possibly unread, half-close and read until the client
        closes (at most LINGER seconds), or a reset could discard the answer before it is read."""
        if not unread or self.writer.transport.is_closing():
            return
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            async with asyncio.timeout(LINGER):
                while await self.reader.read(65536):
                    pass
        except (TimeoutError, ConnectionError, OSError):
            pass


def _keeps_alive(request: Request, response: Response) -> bool:
    wanted = request.headers.get("Connection", "").lower()
    if "close" in response.headers.get("Connection", "").lower():
        return False
    if request.version >= (1, 1):
        return "close" not in wanted
    # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is a faulty framing; close after the answer
    return "keep-alive" in wanted and "Transfer-Encoding" not in request.headers


def _encode(request: Request, response: Response, keep: bool) -> bytes:
    status = response.status
    body = response.body
    headers = response.headers
    for name in ("Content-Length", "Connection", "Transfer-Encoding"):
        if name in headers:
            del headers[name]
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode() + headers.encode()
    if status in _NO_BODY_STATUSES:
        body = b""
    elif response.stream is not None:  # the head alone: the body follows as it comes
        head += b"Transfer-Encoding: chunked\r\n" if request.version >= (1, 1) else b""
    else:
        head += b"Content-Length: %d\r\n" % len(body)
    if not keep:
        head += b"Connection: close\r\n"
    elif request.version < (1, 1):
        head += b"Connection: keep-alive\r\n"
    if request.method == "HEAD":
        return head + b"\r\n"
    return head + b"\r\n" + body
