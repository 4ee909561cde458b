"""The agent's control socket: a local HTTP API on a unix socket in its state directory.

`edgeagent status` and the `edgeagent queue ...` commands use it while the agent runs, so
that changes go through the process that owns the queue (and its in-memory state).
The socket is created with mode 0600: only the agent's user may use it. Its clients write a
whole request at once, so a connection that sends nothing, or stops halfway, is closed after
WAIT_FOR_REQUEST (the head, and the wait for the next request) or READ_TIMEOUT (the body); one
that stops reading its answer is cut once it has taken none of it for WRITE_STALL_TIMEOUT
(however slowly it reads otherwise), which frees the answer it held. A command may take long
(a reload, a large export): only the sending is bounded, not the handler. `call` gives up on an
agent that does not answer within its `timeout`.

An export is streamed: its handler returns an async iterator (`from_thread` reads the queue in a
worker thread, a few MiB ahead of the client at most), sent chunked, and `call` hands each piece
to a sink as it arrives. Neither side holds the whole export, whatever the backlog; an answer
that breaks off midway has no final chunk, and `call` raises.

A unix socket's address holds 107 bytes of path: under a deeper state directory the agent failed
to start. Both sides then name the socket through a descriptor of its directory
(/proc/self/fd/N/control.sock), which reaches the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from edgeagent.http1 import wire
from edgeagent.http1.server import Request, Response, Server

log = logging.getLogger(__name__)
SOCKET_NAME = "control.sock"
MAX_ANSWER = 1 << 30  # a JSON answer (a streamed export has no bound)
STREAM_PIECE = 1 << 20  # bytes of an export sent at a time
STREAM_AHEAD = 2  # pieces read ahead of the client
WAIT_FOR_REQUEST = 10.0  # seconds from the connection (or the last answer) until a request's head is in
READ_TIMEOUT = 10.0  # seconds for the body once its head is in
WRITE_STALL_TIMEOUT = 10.0  # seconds a client may take none of its answer


MAX_ADDRESS = 107  # bytes of a unix socket's path (sun_path, its final NUL aside)


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, SOCKET_NAME)


@contextlib.contextmanager
def addressable(path: str) -> Iterator[str]:
    """`path`, or where a socket address cannot hold it, the same file named through a descriptor of
    its directory, open while the block runs."""
    if len(os.fsencode(path)) <= MAX_ADDRESS or not os.path.isdir("/proc/self/fd"):
        yield path
        return
    directory = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{directory}/{os.path.basename(path)}"
    finally:
        os.close(directory)


class ControlServer:
    """Serves `handlers[name](params) -> awaitable result` as POST /<name> with a JSON body."""

    def __init__(self, path: str, handlers: Mapping[str, Callable[[dict[str, Any]], Any]], *,
                 wait_for_request: float = WAIT_FOR_REQUEST, read_timeout: float = READ_TIMEOUT,
                 write_stall_timeout: float = WRITE_STALL_TIMEOUT):
        self.path = path
        self.handlers = handlers
        self.wait_for_request = wait_for_request
        self.read_timeout = read_timeout
        self.write_stall_timeout = write_stall_timeout
        self._server: Server | None = None

    async def start(self) -> None:
        from edgeagent import netaddr  # the agent's side only: a command asking it needs no config models

        server = Server(wait_for_request=self.wait_for_request, write_stall_timeout=self.write_stall_timeout)
        server.post("/{name}", self._handle)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        old_mask = os.umask(0o177)
        try:  # bound here: asyncio would replace a socket file even when another agent listens on it
            with addressable(self.path) as address:
                sock = netaddr.unix_socket(address)  # a file left by a killed agent is replaced
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            log.warning("another process serves this state directory's control socket: edgeagent status, "
                        "reload and queue commands reach it, not this agent; give each agent its own "
                        "--state-dir", extra={"socket": self.path, "error": exc.strerror})
            return
        finally:
            os.umask(old_mask)
        await server.listen(sock=sock)
        self._server = server

    async def shutdown(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace=5.0)
            if os.path.exists(self.path):
                os.unlink(self.path)

    async def _handle(self, request: Request) -> Response:
        handler = self.handlers.get(request.params["name"])
        if handler is None:
            return _json({"error": "unknown command"}, 404)
        try:
            async with asyncio.timeout(self.read_timeout):
                params = await request.json() if request.content_length else {}
        except TimeoutError:  # the body is left unread: the server closes the connection after this answer
            return _json({"error": f"the request body was not received within {self.read_timeout:g}s"}, 408)
        try:
            result = await handler(params)
        except (KeyError, ValueError) as exc:  # a KeyError's str() is its message quoted
            return _json({"error": str(exc.args[0]) if exc.args else str(exc)}, 400)
        except Exception as exc:  # a disk full under a compaction: the caller reads why, not a bare 500
            log.error("control command failed", exc_info=exc, extra={"command": request.params["name"]})
            return _json({"error": f"{type(exc).__name__}: {exc}"}, 500)
        if isinstance(result, (bytes, bytearray)):
            return Response(body=bytes(result), content_type="application/octet-stream")
        if isinstance(result, AsyncIterator):
            return Response(stream=result, content_type="application/octet-stream")
        return _json(result)


async def from_thread(produce: Callable[[], Iterable[bytes]]) -> AsyncIterator[bytes]:
    """What `produce()` yields, read in a worker thread (LMDB reads and JSON encoding off the loop),
    in pieces of about STREAM_PIECE, at most STREAM_AHEAD of them ahead of the consumer. A consumer
    that stops early (the client went away) stops the thread; a failure in it is raised here."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    room = threading.Semaphore(STREAM_AHEAD)
    stopped = threading.Event()

    def hand_over(item: bytes | BaseException | None) -> bool:
        while not room.acquire(timeout=0.5):
            if stopped.is_set():
                return False
        loop.call_soon_threadsafe(ready.put_nowait, item)
        return not stopped.is_set()

    def run() -> None:
        try:
            pending: list[bytes] = []
            size = 0
            for part in produce():
                pending.append(part)
                size += len(part)
                if size >= STREAM_PIECE:
                    if not hand_over(b"".join(pending)):
                        return
                    pending, size = [], 0
            if (not pending or hand_over(b"".join(pending))) and not stopped.is_set():
                loop.call_soon_threadsafe(ready.put_nowait, None)
        except Exception as exc:  # noqa: BLE001 - raised on the consumer's side
            if not stopped.is_set():
                loop.call_soon_threadsafe(ready.put_nowait, exc)

    worker = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        while (item := await ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            room.release()
            yield item
    finally:
        stopped.set()
        await asyncio.shield(worker)


def _json(value: Any, status: int = 200) -> Response:
    return Response(status, text=json.dumps(value, default=str), content_type="application/json")


Sink = Callable[[bytes], object]


class Lines:
    """A sink for an answer streamed as JSON lines (`dead-letter list`): each line, decoded, goes to
    `each` as soon as it is whole."""

    def __init__(self, each: Callable[[Any], object]):
        self.each = each
        self._partial = b""

    def __call__(self, piece: bytes) -> None:
        lines = (self._partial + piece).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                self.each(json.loads(line))


class AnswerBrokenOff(ConnectionError):
    """The agent began its answer and the connection ended before its end (part of an export
    may have gone to the sink already)."""


async def call(path: str, name: str, params: dict[str, Any] | None = None, timeout: float = 60.0,
               sink: Sink | None = None) -> Any:
    """Ask the running agent; raises ConnectionError when no agent listens on `path` (or its answer
    breaks off), TimeoutError when one accepts the command but has not answered it within `timeout`
    seconds, or stops sending its answer that long. With `sink`, a binary answer (an export) goes
    to it piece by piece as it arrives, and None is returned."""
    try:
        async with asyncio.timeout(timeout) as scope:
            try:
                with addressable(path) as address:
                    reader, writer = await asyncio.open_unix_connection(address, limit=wire.MAX_HEAD)
            except OSError as exc:  # no socket, nobody listening, or not ours to use
                raise ConnectionError(str(exc)) from exc
            try:
                status, content_type, body = await _exchange(reader, writer, name, params or {}, sink, scope,
                                                             timeout)
            finally:
                writer.close()
    except TimeoutError:
        raise TimeoutError(f"the agent on the control socket {path} did not answer {name!r} "
                           f"within {timeout:g}s") from None
    if status != 200:
        try:
            error = json.loads(body).get("error")
        except (ValueError, AttributeError):
            error = None
        raise RuntimeError(error or f"control command failed ({status})")
    if content_type == "application/json":
        return json.loads(body)
    return None if sink is not None else body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str,
                    params: dict[str, Any], sink: Sink | None, scope: asyncio.Timeout,
                    timeout: float) -> tuple[int, str, bytes]:
    """(status, media type, body) of one POST /<name>; a binary answer goes to `sink` when given
    (the body returned is then empty), each piece within `timeout` of the one before. What the
    sink raises (a closed pipe) comes out as it is."""
    body = json.dumps(params).encode()
    try:
        writer.write(f"POST /{name} HTTP/1.1\r\nHost: edgeagent\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        head = await wire.read_head(reader)
        if head is None:
            raise ConnectionResetError("no answer")
        start, headers = wire.parse_head(head)
        _, status, _ = wire.parse_status_line(start)
        length = wire.body_length(headers, request=False)
    except (OSError, wire.ProtocolError) as exc:
        raise ConnectionError(f"the control socket closed before its answer: {exc}") from exc
    content_type = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    target = sink if status == 200 and content_type == "application/octet-stream" else None
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    received = 0
    pieces = wire.iter_body(reader, length)
    while True:
        try:
            chunk = await anext(pieces)
            received += len(chunk)
            if target is None and received > MAX_ANSWER:
                raise wire.ProtocolError(f"the answer exceeds {MAX_ANSWER} bytes")
        except StopAsyncIteration:
            return status, content_type, b"".join(chunks)
        except (OSError, wire.ProtocolError) as exc:
            raise AnswerBrokenOff(f"the control socket closed before the end of its answer: {exc}") from exc
        scope.reschedule(loop.time() + timeout)
        if target is not None:
            target(chunk)
        else:
            chunks.append(chunk)
