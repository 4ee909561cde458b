"""The HTTP/1.1 server's chunked request bodies: a body of tiny chunks, which Go accepts and so do
we, is read at little more than the cost of its bytes, and whatever its chunks, it holds the event
loop no longer than other clients can wait."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable

from edgeagent.http1.server import Request, Response, Server

SMALL_ANSWERED_WITHIN = 0.25  # seconds; tiny chunks held other clients 0.5 s to 1 s


def _chunked(body: bytes, sizes: Iterable[int]) -> bytes:
    framed = bytearray()
    position = 0
    for size in sizes:
        if position >= len(body):
            break
        piece = body[position:position + size]
        framed += b"%x\r\n%b\r\n" % (len(piece), piece)
        position += len(piece)
    return bytes(framed) + b"0\r\n\r\n"


def _digest(reading: list[float]) -> Callable[[Request], Awaitable[Response]]:
    """A handler answering the body's length and hash; `reading` gets when it began and ended."""
    async def handler(request: Request) -> Response:
        hashed = hashlib.sha256()
        size = 0
        reading.append(time.monotonic())
        async for chunk in request.iter_chunks():
            hashed.update(chunk)
            size += len(chunk)
        reading.append(time.monotonic())
        return Response(text=f"{size} {hashed.hexdigest()}")
    return handler


async def _small(request: Request) -> Response:
    return Response(text="small")


def _send_blocking(port: int, request: bytes, answers: list[bytes]) -> None:
    """A plain socket client: the whole request, then its answer (until the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while more := sock.recv(65536):
            received += more
        answers.append(received)


async def _small_request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await reader.read()
    finally:
        writer.close()


def _upload(body: bytes, sizes: Iterable[int]) -> tuple[bytes, list[float], list[tuple[float, float]]]:
    """Posts `body` in chunks of `sizes` from a plain socket client while another client sends
    small requests on connections of its own, one after another; the big one's answer, when its
    handler began and ended reading, and when each small request went and was answered."""
    request = (b"POST /digest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + _chunked(body, sizes))
    reading: list[float] = []

    async def scenario() -> tuple[list[bytes], list[tuple[float, float]]]:
        server = Server()
        server.post("/digest", _digest(reading))
        server.get("/small", _small)
        port = await server.listen(host="127.0.0.1", port=0)
        answers: list[bytes] = []
        probes: list[tuple[float, float]] = []
        sender = threading.Thread(target=_send_blocking, args=(port, request, answers), daemon=True)
        try:
            sender.start()
            deadline = time.monotonic() + 60
            while sender.is_alive() and time.monotonic() < deadline:
                started = time.monotonic()
                answer = await asyncio.wait_for(_small_request(port), 30)
                probes.append((started, time.monotonic()))
                assert answer.endswith(b"small")
                await asyncio.sleep(0.005)
            await asyncio.to_thread(sender.join, 30)
        finally:
            await server.stop(grace=1.0)
        return answers, probes

    answers, probes = asyncio.run(scenario())
    assert len(answers) == 1 and answers[0].startswith(b"HTTP/1.1 200 ")
    return answers[0], reading, probes


def test_a_body_of_one_byte_chunks_is_read_whole_and_at_little_more_than_the_cost_of_its_bytes():
    body = bytes(index * 7 % 251 for index in range(1_000_000))
    answer, (began, ended), _ = _upload(body, itertools.repeat(1))
    assert answer.endswith(f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode())
    assert ended - began < 1.0, f"1 MB of 1-byte chunks took {ended - began:.2f}s to read (Go: 0.06 s)"


def test_a_body_of_tiny_chunks_of_mixed_sizes_leaves_other_clients_answered_promptly():
    body = bytes(index * 7 % 251 for index in range(450_000))
    answer, (began, ended), probes = _upload(body, itertools.cycle([1, 2]))  # 300,000 chunks
    assert answer.endswith(f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode())
    longest = max(end - start for start, end in probes)
    assert longest < SMALL_ANSWERED_WITHIN, f"a small request waited {longest:.3f}s"
    assert any(began < start and end < ended for start, end in probes), "no small request while the body was read"
