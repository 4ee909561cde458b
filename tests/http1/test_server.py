"""The HTTP/1.1 server's own behaviours, against raw sockets and real clients (aiohttp, http.client)."""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from edgeagent.http1 import server as http1
from edgeagent.http1 import wire
from edgeagent.http1.server import Request, Response, Server
from tests.helpers.certs import make_certs
from tests.helpers.descriptors import no_free_descriptors


async def echo(request: Request) -> Response:
    body = await request.read()
    return Response(200, body=body, content_type="application/octet-stream",
                    headers={"X-Route": request.route, "X-Query": request.query.get("q", "")})


async def ignore_body(request: Request) -> Response:
    return Response(200, text="ignored")


async def fail(request: Request) -> Response:
    raise RuntimeError("the handler broke")


def served(scenario: Callable[[Server, int], Awaitable[object]], wait: float = 0.0,
           middlewares: list[http1.Middleware] | None = None) -> object:
    async def run() -> object:
        server = Server(middlewares=middlewares or [], wait_for_request=wait)
        server.post("/echo", echo)
        server.post("/ignore", ignore_body)
        server.get("/fail", fail)
        server.post("/cmd/{name}", lambda request: _answer(request.params["name"]))
        port = await server.listen(host="127.0.0.1", port=0)
        try:
            return await scenario(server, port)
        finally:
            await server.stop(grace=1.0)

    return asyncio.run(run())


async def _answer(text: str) -> Response:
    return Response(text=text)


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """What the server sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response's head and body (Content-Length framed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)


def test_framing_errors_get_their_status_and_the_connection_closes():
    cases = [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
        (b"POST /echo HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", b"400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", b"400"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"400"),  # HTTP/1.1 without Host, as Go
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n", b"417"),
        # framings a proxy in front could read another way: they must not reach the handler
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", b"400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \xa03\r\n\r\nabc", b"400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", b"400"),
    ]

    async def scenario(server: Server, port: int) -> list[bytes]:
        return [await exchange(port, request + post("/echo", b"next")) for request, _ in cases]

    answers = served(scenario)
    assert isinstance(answers, list)
    for (_, status), answer in zip(cases, answers, strict=True):
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
        assert b"Connection: close\r\n" in answer
        assert b"\nHTTP/1.1 " not in answer  # nothing after the error is taken as a request


def test_a_broken_chunked_body_gets_400_and_the_connection_closes():
    request = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    answer = served(lambda server, port: exchange(port, request + post("/echo", b"next")))
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1") == 1


def test_pipelined_requests_are_answered_in_order_on_one_connection():
    async def scenario(server: Server, port: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"
        writer.write(post("/echo", b"one") + chunked + post("/echo?q=3", b"three"))
        bodies = [(await read_response(reader))[1] for _ in range(3)]
        writer.close()
        return bodies

    assert served(scenario) == [b"one", b"two", b"three"]


def test_http_1_0_closes_unless_it_asks_for_keep_alive():
    async def scenario(server: Server, port: int) -> tuple[bytes, bytes]:
        plain = await exchange(port, b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"
        writer.write(request + request)
        first, _ = await read_response(reader)
        second, body = await read_response(reader)
        writer.close()
        assert b"Connection: keep-alive" in second and body == b"hi"
        return plain, first

    plain, kept = served(scenario)  # type: ignore[misc]
    assert plain.startswith(b"HTTP/1.1 200") and b"Connection: close" in plain and plain.endswith(b"hi")
    assert b"Connection: keep-alive" in kept


def test_100_continue_is_sent_when_the_handler_reads_the_body_and_not_when_it_answers_first():
    async def scenario(server: Server, port: int) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"body")
        _, body = await read_response(reader)
        writer.close()
        assert body == b"body"
        refused = await exchange(port, b"POST /ignore HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                                       b"Content-Length: 4\r\n\r\n")
        return interim, refused

    interim, refused = served(scenario)  # type: ignore[misc]
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    # the client was not asked for its body: it cannot be told apart from a next request, so the connection closes
    assert refused.startswith(b"HTTP/1.1 200") and b"100 Continue" not in refused and b"Connection: close" in refused


def test_unknown_paths_get_404_other_methods_405_with_allow_and_both_pass_the_middlewares():
    seen: list[tuple[str, int]] = []

    async def record(request: Request, handler: http1.Handler) -> Response:
        response = await handler(request)
        seen.append((request.route, response.status))
        response.headers["X-Seen"] = "1"
        return response

    async def scenario(server: Server, port: int) -> list[bytes]:
        return [await exchange(port, b"%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % line)
                for line in (b"GET /nowhere", b"GET /echo", b"POST /cmd/status", b"POST /cmd/")]

    missing, wrong_method, named, empty_name = served(scenario, middlewares=[record])  # type: ignore[misc]
    assert missing.startswith(b"HTTP/1.1 404") and missing.endswith(b"404 page not found\n")
    assert wrong_method.startswith(b"HTTP/1.1 405") and b"Allow: POST\r\n" in wrong_method
    assert named.startswith(b"HTTP/1.1 200") and named.endswith(b"status")
    assert empty_name.startswith(b"HTTP/1.1 404")
    assert all(b"X-Seen: 1" in answer for answer in (missing, wrong_method, named))
    assert seen == [("", 404), ("", 405), ("/cmd/{name}", 200), ("", 404)]


def test_a_path_ending_in_a_slash_is_a_subtree_and_its_bare_root_is_redirected_as_go_s_mux_does():
    async def scenario(server: Server, port: int) -> list[bytes]:
        return [await exchange(port, b"%s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                               % line) for line in (b"POST /tree/", b"POST /tree/a/b", b"POST /tree/exact",
                                                    b"POST /tree?q=1", b"GET /tree", b"POST /treex", b"POST /echo/")]

    async def run() -> list[bytes]:
        server = Server()
        server.post("/tree/", echo)
        server.post("/tree/exact", lambda request: _answer("exact"))
        server.post("/echo", echo)
        port = await server.listen(host="127.0.0.1", port=0)
        try:
            return await scenario(server, port)
        finally:
            await server.stop(grace=1.0)

    root, below, longest, bare, bare_get, beside, not_a_tree = asyncio.run(run())
    assert root.startswith(b"HTTP/1.1 200") and b"X-Route: /tree/\r\n" in root
    assert below.startswith(b"HTTP/1.1 200") and b"X-Route: /tree/\r\n" in below
    assert longest.endswith(b"exact")  # the longest pattern wins, as in Go
    assert bare.startswith(b"HTTP/1.1 307") and b"Location: /tree/?q=1\r\n" in bare and bare.endswith(b"\r\n\r\n")
    assert b"Location: /tree/\r\n" in bare_get and bare_get.endswith(b'<a href="/tree/">Temporary Redirect</a>.\n\n')
    assert beside.startswith(b"HTTP/1.1 404") and not_a_tree.startswith(b"HTTP/1.1 404")


def test_head_of_a_get_route_answers_its_headers_without_the_body():
    async def run() -> bytes:
        server = Server()
        server.get("/page", lambda request: _answer("hello"))
        port = await server.listen(host="127.0.0.1", port=0)
        try:
            return await exchange(port, b"HEAD /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        finally:
            await server.stop(1.0)

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 200") and b"Content-Length: 5\r\n" in answer and answer.endswith(b"\r\n\r\n")


def test_a_small_unread_body_is_drained_and_the_connection_goes_on():
    async def scenario(server: Server, port: int) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/ignore", b"x" * 100_000) + post("/echo", b"after"))
        first, _ = await read_response(reader)
        _, body = await read_response(reader)
        writer.close()
        return first, body

    first, body = served(scenario)  # type: ignore[misc]
    assert b"Connection: close" not in first and body == b"after"


def test_a_large_unread_body_closes_the_connection_after_an_answer_the_client_still_reads():
    async def scenario(server: Server, port: int) -> tuple[int, str | None]:
        def blocking() -> tuple[int, str | None]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("POST", "/ignore", body=b"x" * (http1.DRAIN_LIMIT * 8))
            response = connection.getresponse()
            response.read()
            connection.close()
            return response.status, response.getheader("Connection")

        return await asyncio.to_thread(blocking)

    assert served(scenario) == (200, "close")


def test_a_handler_exception_is_a_500_and_the_connection_goes_on():
    async def scenario(server: Server, port: int) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n" + post("/echo", b"still here"))
        failed, _ = await read_response(reader)
        _, body = await read_response(reader)
        writer.close()
        return failed, body

    failed, body = served(scenario)  # type: ignore[misc]
    assert failed.startswith(b"HTTP/1.1 500") and body == b"still here"


def test_a_connection_waiting_too_long_for_its_next_request_is_closed():
    async def scenario(server: Server, port: int) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo", b"x"))
        await read_response(reader)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        return time.monotonic() - started

    waited = served(scenario, wait=0.3)
    assert isinstance(waited, float) and 0.2 < waited < 2.0


def test_stop_closes_idle_connections_at_once_and_answers_a_request_in_flight():
    async def run() -> tuple[bytes, bytes, float]:
        began = asyncio.Event()

        async def slow(request: Request) -> Response:
            began.set()
            await asyncio.sleep(0.5)
            return Response(text="done")

        server = Server()
        server.post("/slow", slow)
        port = await server.listen(host="127.0.0.1", port=0)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        busy = asyncio.ensure_future(exchange(port, post("/slow", b"")))
        await began.wait()
        stopped = time.monotonic()
        await server.stop(grace=5.0)
        took = time.monotonic() - stopped
        idle = await asyncio.wait_for(idle_reader.read(), 1)
        idle_writer.close()
        return idle, await busy, took

    idle, answer, took = asyncio.run(run())
    assert idle == b""
    assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer and answer.endswith(b"done")
    assert took < 2.0


def test_stop_cuts_a_request_that_outlives_the_grace_period():
    async def run() -> tuple[bytes, float]:
        async def stuck(request: Request) -> Response:
            await asyncio.sleep(30)
            return Response()

        server = Server()
        server.post("/stuck", stuck)
        port = await server.listen(host="127.0.0.1", port=0)
        busy = asyncio.ensure_future(exchange(port, post("/stuck", b"")))
        await asyncio.sleep(0.1)
        stopped = time.monotonic()
        await server.stop(grace=0.3)
        return await busy, time.monotonic() - stopped

    answer, took = asyncio.run(run())
    assert answer == b"" and took < 2.0


def test_real_clients_keep_one_connection_for_many_requests():
    async def scenario(server: Server, port: int) -> list[tuple[int, bytes]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            answers = []
            for index in range(5):
                async with session.post(f"http://127.0.0.1:{port}/echo", data=b"%d" % index) as response:
                    answers.append((response.status, await response.read()))
            async with session.post(f"http://127.0.0.1:{port}/echo", data=_chunks()) as response:
                answers.append((response.status, await response.read()))
        return answers

    assert served(scenario) == [*[(200, b"%d" % index) for index in range(5)], (200, b"abcdef")]


async def _chunks():
    yield b"abc"
    yield b"def"


def test_a_unix_socket_serves_and_a_peer_has_no_address():
    async def run(path: str) -> bytes:
        async def remote(request: Request) -> Response:
            return Response(text=f"[{request.remote}]")

        server = Server()
        server.get("/remote", remote)
        await server.listen(path=path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"GET /remote HTTP/1.1\r\nHost: x\r\n\r\n")
            _, body = await read_response(reader)
            writer.close()
            return body
        finally:
            await server.stop(1.0)

    with tempfile.TemporaryDirectory() as directory:
        assert asyncio.run(run(f"{directory}/s.sock")) == b"[]"


def test_an_answer_with_connection_close_is_not_lost_to_a_reset_from_data_pipelined_after_it():
    """Input left unread at the close makes the kernel send a reset, which can discard the answer
    before the client reads it: the server half-closes and reads on first (LINGER)."""
    async def scenario(server: Server, port: int) -> list[bytes]:
        answers = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/echo", b"hi", b"Connection: close\r\n") + post("/echo", b"x" * 4_000_000))
            await asyncio.sleep(0.2)  # the server has answered and closed by now
            try:
                answers.append(await asyncio.wait_for(reader.read(), 5))
            except ConnectionResetError:
                answers.append(b"reset")
            writer.close()
        return answers

    for answer in served(scenario):  # type: ignore[attr-defined]
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\nhi"), answer[:60]


def test_http_1_0_with_transfer_encoding_is_answered_then_closed():
    """RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has a faulty framing; what follows
    it on the connection is not taken as a next request."""
    request = (b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"2\r\nhi\r\n0\r\n\r\n")
    answer = served(lambda server, port: exchange(port, request + post("/echo", b"next")))
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in answer and answer.endswith(b"hi")


def test_a_client_that_never_reads_its_answers_is_cut_at_the_write_timeout():
    """Go's WriteTimeout covers writing the answer: a client that sends requests and never reads
    the answers does not hold its connection (and the answers buffered for it) for ever."""
    async def big(request: Request) -> Response:
        return Response(body=b"x" * (1 << 20))

    async def run() -> tuple[int, float]:
        server = Server(write_timeout=0.5)
        server.get("/big", big)
        port = await server.listen(host="127.0.0.1", port=0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 64)
            started = time.monotonic()
            while server._connections and time.monotonic() - started < 5:
                await asyncio.sleep(0.05)
            held = time.monotonic() - started
            received = 0
            try:
                while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):
                    received += len(chunk)
            except (ConnectionError, TimeoutError):
                pass
            writer.close()
            return received, held
        finally:
            await server.stop(1.0)

    received, held = asyncio.run(run())
    assert held < 3.0 and received < 64 << 20


def test_a_tls_client_that_never_sends_its_handshake_is_closed_at_the_wait_for_a_request(tmp_path):
    """asyncio waits 60 s for a TLS handshake; Go bounds it by the shortest of the server's
    timeouts, as a head that never comes."""
    certs = make_certs(str(tmp_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)

    async def run() -> tuple[bytes, float]:
        server = Server(wait_for_request=0.5)
        server.get("/page", lambda request: _answer("hello"))
        port = await server.listen(host="127.0.0.1", port=0, ssl_context=context)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            try:
                data = await asyncio.wait_for(reader.read(), 10)
            except ConnectionError:
                data = b""
            writer.close()
            return data, time.monotonic() - started
        finally:
            await server.stop(1.0)

    data, waited = asyncio.run(run())
    assert data == b"" and waited < 3.0


def test_a_connection_closed_while_its_client_does_not_take_the_answer_does_not_keep_its_socket():
    """An answer that fits the kernel's buffers but for a few KiB is "written"; when the connection
    then closes (here: no next request), asyncio's close waits to flush those KiB for ever if the
    client never reads: the socket stays open, a file descriptor per such client."""
    async def page(request: Request) -> Response:
        return Response(body=b"x" * 40_000)

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def run() -> tuple[int, int]:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # inherited by accepted sockets
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = Server(wait_for_request=0.3, write_timeout=0.5)
        server.get("/page", page)
        port = await server.listen(sock=listener)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            client.connect(("127.0.0.1", port))
            client.sendall(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.2)
            held = open_fds()  # the server's socket of the connection is open: answering
            for _ in range(30):  # bounded: 3 s, where the timeouts close it after about 0.8 s
                await asyncio.sleep(0.1)
                if open_fds() < held:
                    break
            return held, open_fds()
        finally:
            client.close()
            await server.stop(1.0)

    held, after = asyncio.run(run())
    assert after == held - 1


def test_a_tls_record_broken_in_the_middle_of_a_body_is_a_disconnect_not_a_handler_failure(tmp_path, caplog):
    """The TLS layer's error reaches the body's reader as an ssl.SSLError: for the handler it is
    the client's connection breaking (a ConnectionError, counted, not logged per request), and
    the server closes the connection without an error of its own."""
    certs = make_certs(str(tmp_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    seen: list[str] = []

    async def read(request: Request) -> Response:
        try:
            await request.read()
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise
        return Response()

    def client(port: int) -> None:
        tls = ssl.create_default_context(cafile=certs.ca_file).wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
        tls.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        time.sleep(0.2)
        raw = socket.socket(fileno=tls.detach())
        raw.sendall(b"\x17\x03\x03\x00\x10" + b"not a TLS record")  # an application-data record that fails
        try:
            raw.recv(1000)
        except OSError:
            pass
        raw.close()

    async def run() -> None:
        server = Server()
        server.post("/read", read)
        port = await server.listen(host="127.0.0.1", port=0, ssl_context=context)
        try:
            await asyncio.to_thread(client, port)
            await asyncio.sleep(0.2)
        finally:
            await server.stop(1.0)

    asyncio.run(run())
    assert seen == ["ConnectionResetError"]
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]


def test_a_head_whose_lines_end_in_bare_lf_is_answered_at_once_as_go_reads_it():
    """Go's textproto ends a head's line at LF and drops one CR before it, so heads in bare LF or
    mixed line ends are requests; the server waited for a CRLF CRLF that never came and held them
    until the wait for a request ran out (60 s by default)."""
    bare = b"POST /echo HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc"
    mixed = b"POST /echo?q=2 HTTP/1.1\r\nHost: x\nContent-Length: 5\r\n\nabcde"

    async def scenario(server: Server, port: int) -> list[tuple[bytes, bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bare + mixed + post("/echo", b"crlf"))  # pipelined: each framed as Go frames it
        try:
            return [await asyncio.wait_for(read_response(reader), 5) for _ in range(3)]
        finally:
            writer.close()

    answers = served(scenario, wait=60.0)
    assert isinstance(answers, list)
    assert [body for _, body in answers] == [b"abc", b"abcde", b"crlf"]
    assert all(head.startswith(b"HTTP/1.1 200") for head, _ in answers)
    assert b"X-Query: 2\r\n" in answers[1][0]


def test_a_cr_that_ends_no_line_is_refused_in_a_head_as_go_refuses_it():
    """Only the CR right before a line's LF is dropped: a framing header whose value keeps a CR
    (`Content-Length: 3\\r\\r\\n`), or a CR in the middle of a line, is a 400, as in Go, and never
    a length read past the CR."""
    cases = [b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\r\n\r\nabc",
             b"POST /echo HTTP/1.1\nHost: x\nContent-Length: 3\r\r\n\nabc",
             b"POST /echo HTTP/1.1\r\nHost: x\rContent-Length: 3\r\n\r\nabc",
             b"POST /echo\r HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc",
             b"\r\r\nPOST /echo HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc"]

    async def scenario(server: Server, port: int) -> list[bytes]:
        return [await exchange(port, request + post("/echo", b"next")) for request in cases]

    answers = served(scenario, wait=60.0)
    assert isinstance(answers, list)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 400") and b"\nHTTP/1.1 " not in answer, answer[:100]


def test_a_request_line_over_the_head_limit_is_431_at_once_and_a_head_that_never_ends_is_cut_at_the_wait():
    async def scenario(server: Server, port: int) -> tuple[bytes, float, bytes, float]:
        started = time.monotonic()
        long_line = await exchange(port, b"GET /" + b"a" * (wire.MAX_HEAD + 10), timeout=5)
        long_took = time.monotonic() - started
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\nHost: x\n")
        started = time.monotonic()
        endless = None
        try:
            for _ in range(50):  # a header line every 0.1 s, never the blank line, until the server closes
                writer.write(b"X-More: y\n")
                try:
                    endless = await asyncio.wait_for(reader.read(), 0.1)
                    break
                except TimeoutError:
                    pass
        except ConnectionError:
            endless = b""
        finally:
            writer.close()
        return long_line, long_took, endless, time.monotonic() - started

    long_line, long_took, endless, endless_took = served(scenario, wait=0.5)  # type: ignore[misc]
    assert long_line.startswith(b"HTTP/1.1 431") and long_took < 2.0
    assert endless == b"" and endless_took < 3.0


def test_plain_http_to_a_tls_port_gets_go_s_400_and_other_bytes_are_closed_unanswered(tmp_path):
    """Go answers a first TLS record header that reads as an HTTP request ("GET /", "HEAD ", "POST ",
    "PUT /", "OPTIO") in plain text, then closes; anything else that is no TLS is closed without
    a word. The server closed both without one, so a client with http:// in its endpoint learnt
    nothing of why. TLS clients are served as before."""
    certs = make_certs(str(tmp_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    go = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"

    async def plain(port: int, *parts: bytes, eof: bool = False) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for part in parts:
                writer.write(part)
                await asyncio.sleep(0.05)
            if eof:
                writer.write_eof()
            return await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:  # a reset: no answer either
            return b""
        finally:
            writer.close()

    async def run() -> tuple[list[bytes], bytes]:
        server = Server(wait_for_request=2.0)
        server.get("/page", lambda request: _answer("hello"))
        port = await server.listen(host="127.0.0.1", port=0, ssl_context=context)
        try:
            answers = [await plain(port, b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
                       await plain(port, b"GE", b"T /page HTTP/1.1\r\nHost: x\r\n\r\n"),
                       await plain(port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
                       await plain(port, b"PATCH /page HTTP/1.1\r\nHost: x\r\n\r\n"),
                       await plain(port, b"GET", eof=True)]
            tls = ssl.create_default_context(cafile=certs.ca_file)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
            writer.write(b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            served_ = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return answers, served_
        finally:
            await server.stop(1.0)

    answers, served_ = asyncio.run(run())
    assert answers[:3] == [go, go, go]
    assert answers[3:] == [b"", b""]  # not one of Go's five prefixes; fewer than five bytes then EOF
    assert served_.startswith(b"HTTP/1.1 200") and served_.endswith(b"hello")


def test_a_request_whose_body_was_read_in_part_is_freed_without_the_garbage_collector():
    """A handler that stops reading a body (a refusal mid-body, as the memory limiter's) left the
    body's iterator suspended: the request, its iterator and the connection's buffered bytes
    formed a cycle only a full collection frees, and an agent idle after a flood of refused
    requests, making no allocations, held their buffers (tens of MiB) for as long as it stayed idle."""
    import gc
    import weakref

    bodies: list[weakref.ref] = []

    async def refuse_mid_body(request: Request) -> Response:
        chunks = request.iter_chunks()
        bodies.append(weakref.ref(chunks))
        async for _ in chunks:
            break  # the first chunk is enough to refuse
        return Response(503, text="refused")

    async def run() -> list[bool]:
        server = Server()
        server.post("/refuse", refuse_mid_body)
        port = await server.listen(host="127.0.0.1", port=0)
        try:
            for _ in range(3):
                answer = await exchange(port, post("/refuse", b"x" * (http1.DRAIN_LIMIT * 8)))
                assert answer.startswith(b"HTTP/1.1 503")
            for _ in range(50):  # bounded: 5 s for the connections to close
                await asyncio.sleep(0.1)
                if not server._connections:
                    break
            await asyncio.sleep(0.1)
            return [ref() is None for ref in bodies]
        finally:
            await server.stop(grace=1.0)

    gc.disable()
    try:
        freed = asyncio.run(run())
    finally:
        gc.enable()
    assert freed == [True, True, True]


@pytest.mark.e2e  # asyncio's accept loop waits a second after each EMFILE before it accepts again
def test_a_tls_connection_accepted_with_no_descriptor_left_is_closed_at_once_and_the_port_serves_again(
        tmp_path, caplog):
    """accept() took the last descriptor and the TLS listener's dup() of it failed (EMFILE) inside
    connection_made: the connection stayed open and idle, its client waiting forever."""
    certs = make_certs(str(tmp_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)

    async def closed(loop: asyncio.AbstractEventLoop, client: socket.socket) -> bool:
        try:
            return await asyncio.wait_for(loop.sock_recv(client, 1), 2) == b""  # well within the handshake's wait
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    async def run() -> tuple[list[bool], bytes]:
        server = Server(wait_for_request=10.0)
        server.get("/page", lambda request: _answer("hello"))
        port = await server.listen(host="127.0.0.1", port=0, ssl_context=context)
        loop = asyncio.get_running_loop()
        clients = [socket.socket() for _ in range(3)]  # made while there are descriptors
        outcomes = []
        try:
            with no_free_descriptors(spare=1):
                for client in clients:
                    client.setblocking(False)
                    await loop.sock_connect(client, ("127.0.0.1", port))
                    outcomes.append(await closed(loop, client))
            tls = ssl.create_default_context(cafile=certs.ca_file)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
            writer.write(b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return outcomes, answer
        finally:
            for client in clients:
                client.close()
            await server.stop(1.0)

    with caplog.at_level(logging.WARNING, logger="edgeagent.http1.handshake"):
        outcomes, answer = asyncio.run(run())
    assert outcomes == [True, True, True]
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
    refused = [record.getMessage() for record in caplog.records if record.name.startswith("edgeagent")]
    assert len(refused) == 1, refused  # once, not per connection
