"""edgeagent's HTTP/1.1 client against real servers on loopback whose answers each test writes byte
for byte: connection reuse and its limits, the stale-connection retry, answer framings, the 64 KiB
cap against huge and compressed answers, proxies, timeouts and errors."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

import pytest
import zstandard

from edgeagent.http1 import wire
from edgeagent.http1.client import (
    MAX_BODY,
    ClientError,
    ClientSettings,
    ConnectError,
    HttpClient,
    NoAnswerError,
    PoolSettings,
)
from tests.helpers.http_proxy import HttpProxy
from tests.helpers.net import free_port, link_local

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Closing(bytes):
    """An answer after which the server closes the connection."""


# (connection number, request number on it) -> the answer, Closing(answer), or None: close unanswered
Reply = Callable[[int, int], Awaitable[bytes | None] | bytes | None]


class Server:
    """Reads requests (Content-Length bodies) on each connection and writes what `reply` says;
    keeps every request as (connection number, request line, headers)."""

    def __init__(self, reply: Reply, ssl_context: ssl.SSLContext | None = None):
        self.reply = reply
        self.ssl_context = ssl_context
        self.requests: list[tuple[int, str, wire.Headers]] = []
        self.connections = 0
        self.closed = 0  # connections that ended
        self.port = free_port()
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            for count in range(1, 100):
                block = await wire.read_head(reader)
                if block is None:
                    return
                line, headers = wire.parse_head(block)
                await reader.readexactly(int(headers.get("Content-Length", "0")))
                self.requests.append((number, line, headers))
                answer = self.reply(number, count)
                if asyncio.iscoroutine(answer):
                    answer = await answer
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if isinstance(answer, Closing):
                    return
        except (ConnectionError, wire.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed += 1
            writer.close()


def client(**pool: object) -> HttpClient:
    return HttpClient(ClientSettings(pool=PoolSettings(**pool)))  # type: ignore[arg-type]


async def post(http: HttpClient, url: str, body: bytes = b"data", **options: object):
    return await http.request("POST", url + "/v1/traces", body=body, timeout=5, **options)  # type: ignore[arg-type]


def test_a_kept_alive_connection_carries_the_next_request():
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            http = client()
            answers = [await post(http, server.url) for _ in range(3)]
            assert [(a.status, a.body) for a in answers] == [(200, b"ok")] * 3
            assert server.connections == 1 and http.pool.idle_count() == 1
            _, line, headers = server.requests[0]
            assert line == "POST /v1/traces HTTP/1.1" and headers["Host"] == f"127.0.0.1:{server.port}"
            assert headers["Content-Length"] == "4" and "Connection" not in headers
            await http.close()
            await asyncio.sleep(0.05)
            assert server.closed == 1  # closing the client closes its idle connections

    asyncio.run(scenario())


def test_keepalive_off_says_connection_close_and_opens_a_connection_per_request():
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            http = client(keepalive=False)
            for _ in range(2):
                await post(http, server.url)
            assert server.connections == 2 and http.pool.idle_count() == 0
            assert all(headers["Connection"] == "close" for _, _, headers in server.requests)

    asyncio.run(scenario())


@pytest.mark.parametrize("answer", [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                                    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
                                    Closing(b"HTTP/1.1 200 OK\r\n\r\nok")])  # a body until the connection closes
def test_an_answer_that_ends_the_connection_is_not_reused(answer):
    async def scenario() -> None:
        async with Server(lambda *_: answer) as server:
            http = client()
            answers = [await post(http, server.url) for _ in range(2)]
            assert [a.body for a in answers] == [b"ok", b"ok"]
            assert server.connections == 2 and http.pool.idle_count() == 0

    asyncio.run(scenario())


def test_an_idle_connection_closes_after_the_idle_timeout():
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            http = client(idle_timeout=0.1)
            await post(http, server.url)
            assert http.pool.idle_count() == 1
            await asyncio.sleep(0.3)
            assert http.pool.idle_count() == 0 and server.closed == 1
            await post(http, server.url)
            assert server.connections == 2

    asyncio.run(scenario())


def test_idle_caps_close_the_connection_released_beyond_the_per_route_cap_and_the_oldest_beyond_all():
    async def scenario() -> None:
        async def slow(*_: object) -> bytes:
            await asyncio.sleep(0.05)
            return OK

        async with Server(slow) as first, Server(slow) as second:
            http = client(max_idle_per_route=1)
            await asyncio.gather(*(post(http, first.url) for _ in range(3)))
            assert first.connections == 3 and http.pool.idle_count() == 1
            http = client(max_idle=2)
            await asyncio.gather(*(post(http, first.url) for _ in range(2)))
            await post(http, second.url)
            idle = http.pool.idle_connections()
            assert len(idle) == 2 and {c.route.port for c in idle} == {first.port, second.port}

    asyncio.run(scenario())


def test_the_per_route_limit_makes_a_request_wait_for_a_connection():
    async def scenario() -> None:
        busy = most = 0

        async def slow(*_: object) -> bytes:
            nonlocal busy, most
            busy += 1
            most = max(most, busy)
            await asyncio.sleep(0.05)
            busy -= 1
            return OK

        async with Server(slow) as server:
            http = client(limit_per_route=2)
            await asyncio.gather(*(post(http, server.url) for _ in range(6)))
            assert most == 2 and server.connections == 2

    asyncio.run(scenario())


def test_an_idle_connection_the_server_closed_is_not_used():
    async def scenario() -> None:
        async with Server(lambda *_: Closing(OK)) as server:  # no Connection: close, as some servers do
            http = client()
            await post(http, server.url)
            await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
            assert [connection.stale() for connection in http.pool.idle_connections()] == [True]
            await post(http, server.url)
            assert [number for number, _, _ in server.requests] == [1, 2]  # nothing sent on the closed one

    asyncio.run(scenario())


def test_a_reused_connection_closed_before_any_answer_is_retried_once_on_a_new_one():
    async def scenario() -> None:
        def reply(connection: int, count: int) -> bytes | None:
            return None if (connection, count) == (1, 2) else OK  # the race: closed as the request came

        async with Server(reply) as server:
            http = client()
            await post(http, server.url)
            answer = await post(http, server.url)
            assert answer.status == 200
            assert [number for number, _, _ in server.requests] == [1, 1, 2]

    asyncio.run(scenario())


def test_a_request_timed_out_without_a_byte_of_answer_closes_the_idle_connections_of_its_route():
    async def scenario() -> None:
        silent: set[int] = set()  # connections whose path went silent: the server never hears from them again

        async def reply(connection: int, count: int) -> bytes | None:
            if connection in silent:
                await asyncio.sleep(30)  # never within the test's timeouts
            await asyncio.sleep(0.05)  # the first requests overlap: each gets a connection of its own
            return OK

        async with Server(reply) as server:
            http = client()
            await asyncio.gather(*(post(http, server.url) for _ in range(3)))
            assert http.pool.idle_count() == 3
            silent.update((1, 2, 3))
            with pytest.raises(TimeoutError):
                await http.request("POST", server.url, body=b"data", timeout=0.3)
            assert http.pool.idle_count() == 0  # idle since before it was sent: as silent, likely
            answer = await http.request("POST", server.url, body=b"data", timeout=1)
            assert answer.status == 200 and server.requests[-1][0] == 4

    asyncio.run(scenario())


def test_a_new_connection_closed_before_any_answer_is_not_retried():
    async def scenario() -> None:
        async with Server(lambda *_: None) as server:
            http = client()
            with pytest.raises(NoAnswerError, match="before an answer"):
                await post(http, server.url)
            assert len(server.requests) == 1

    asyncio.run(scenario())


def test_an_answer_broken_off_is_not_retried():
    async def scenario() -> None:
        def reply(connection: int, count: int) -> bytes:
            return OK if count == 1 else Closing(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")

        async with Server(reply) as server:
            http = client()
            await post(http, server.url)
            with pytest.raises(ClientError, match="broke off"):
                await post(http, server.url)
            assert len(server.requests) == 2

    asyncio.run(scenario())


def _answer(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{header}\r\n" for header in headers)
    return f"HTTP/1.1 200 OK\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_a_chunked_answer_after_an_informational_one_is_read_and_the_connection_kept():
    chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" \
              b"2;ext=1\r\nok\r\n3\r\n!!!\r\n0\r\nX-Trailer: 1\r\n\r\n"

    async def scenario() -> None:
        async with Server(lambda *_: chunked) as server:
            http = client()
            answers = [await post(http, server.url) for _ in range(2)]
            assert [a.body for a in answers] == [b"ok!!!", b"ok!!!"]
            assert server.connections == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("size, kept", [(100 * 1024, True), (4 * 1024 * 1024, False)])
def test_an_answer_is_read_up_to_64_kib_and_a_longer_one_ends_its_connection(size, kept):
    async def scenario() -> None:
        async with Server(lambda *_: _answer(b"x" * size)) as server:
            http = client()
            answer = await post(http, server.url)
            assert answer.body == b"x" * MAX_BODY
            assert http.pool.idle_count() == (1 if kept else 0)  # Go drops up to 64 KiB more, then closes
            await post(http, server.url)
            assert server.connections == (1 if kept else 2)

    asyncio.run(scenario())


@pytest.mark.parametrize("coding", ["gzip", "deflate", "zstd"])
def test_a_compressed_answer_is_decoded_and_a_compression_bomb_held_to_64_kib(coding):
    compress = {"gzip": gzip.compress, "deflate": __import__("zlib").compress,
                "zstd": zstandard.ZstdCompressor().compress}[coding]
    small, bomb = compress(b"partial success"), compress(b"\0" * (64 * 1024 * 1024))

    async def scenario() -> None:
        async with Server(lambda _, count: _answer(small if count == 1 else bomb, f"Content-Encoding: {coding}")
                          ) as server:
            http = client()
            assert (await post(http, server.url)).body == b"partial success"
            answer = await post(http, server.url)
            assert answer.body == b"\0" * MAX_BODY
            _, _, headers = server.requests[0]
            assert headers["Accept-Encoding"] == "gzip, deflate"

    assert len(bomb) < 70 * 1024  # 64 MiB of zeros fit in one read: only the output bound holds it
    asyncio.run(scenario())


def test_an_undecodable_body_is_an_error_after_the_answer_came():
    async def scenario() -> None:
        async with Server(lambda *_: _answer(b"not gzip", "Content-Encoding: gzip")) as server:
            with pytest.raises(ClientError, match="not valid gzip"):
                await post(client(), server.url)

    asyncio.run(scenario())


def test_headers_content_type_and_redirects_are_handed_back_not_followed():
    answer = (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nRetry-After: 3\r\n"
              b"Content-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\n\r\n{}")

    async def scenario() -> None:
        async with Server(lambda *_: answer) as server:
            response = await post(client(), server.url, headers=[("X-Token", "t")])
            assert (response.status, response.reason, response.content_type) == (307, "Temporary Redirect",
                                                                                  "application/json")
            assert (response.headers["location"], response.headers["Retry-After"]) == ("/elsewhere", "3")
            assert len(server.requests) == 1 and server.requests[0][2]["X-Token"] == "t"

    asyncio.run(scenario())


def test_a_server_that_does_not_answer_times_the_request_out():
    async def scenario() -> None:
        async def never(*_: object) -> None:
            await asyncio.sleep(10)

        async with Server(never) as server:
            http = client()
            with pytest.raises(TimeoutError):
                await http.request("POST", server.url, body=b"x", timeout=0.2)
            assert http.pool.idle_count() == 0

    asyncio.run(scenario())


def test_no_connection_at_all_is_a_connect_error():
    async def scenario() -> None:
        http = client()
        with pytest.raises(ConnectError, match="cannot connect"):
            await post(http, f"http://127.0.0.1:{free_port()}")
        with pytest.raises(ConnectError, match="cannot resolve"):
            await post(http, "http://collector.invalid:4318")

    asyncio.run(scenario())


def test_every_request_is_observed_with_its_status_or_error():
    seen: list[tuple[str, str, int, str]] = []
    settings = ClientSettings(observe=lambda method, url, seconds, status, error:
                              seen.append((method, url.geturl(), status, error)))

    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            http = HttpClient(settings)
            await post(http, server.url)
            port = free_port()
            with pytest.raises(ConnectError):
                await post(http, f"http://127.0.0.1:{port}")
            assert seen == [("POST", f"{server.url}/v1/traces", 200, ""),
                            ("POST", f"http://127.0.0.1:{port}/v1/traces", 0, "ConnectError")]

    asyncio.run(scenario())


def test_cookies_are_kept_and_sent_back_only_with_the_jar_on():
    answer = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Length: 0\r\n\r\n"

    async def scenario(cookies: bool) -> list[str | None]:
        async with Server(lambda *_: answer) as server:
            http = HttpClient(ClientSettings(cookies=cookies))
            for _ in range(2):
                await post(http, server.url)
            return [headers.get("Cookie") for _, _, headers in server.requests]

    assert asyncio.run(scenario(True)) == [None, "session=abc"]
    assert asyncio.run(scenario(False)) == [None, None]


def test_https_through_a_connect_proxy_with_credentials_and_tls_inside_the_tunnel(certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    proxy = HttpProxy(free_port()).start()
    trust = ssl.create_default_context(cafile=certs.ca_file)

    async def scenario() -> None:
        async with Server(lambda *_: OK, ssl_context=context) as server:
            http = client()
            url = f"https://collector.test:{server.port}"  # reachable through the proxy only
            proxy_url = f"http://edge:s3cret@127.0.0.1:{proxy.port}"
            for _ in range(2):
                answer = await post(http, url, tls=trust, server_hostname="localhost", proxy=proxy_url)
                assert answer.body == b"ok"
            assert server.connections == 1  # the tunnel is kept alive and reused
            assert [request.line for request in proxy.requests] == [f"CONNECT collector.test:{server.port} HTTP/1.1"]
            assert proxy.requests[0].proxy_authorization == "Basic ZWRnZTpzM2NyZXQ="
            assert "Proxy-Authorization" not in server.requests[0][2]
            with pytest.raises(ClientError, match="certificate"):  # the name verified is the target's
                await post(client(), url, tls=trust, proxy=proxy_url)

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()


def test_a_proxy_that_refuses_the_tunnel_is_an_answer_not_a_connect_error():
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"

    async def scenario() -> None:
        async with Server(lambda *_: refusal) as proxy:
            with pytest.raises(ClientError, match="refused the tunnel to collector.test:443: 407") as caught:
                await post(client(), "https://collector.test", tls=ssl.create_default_context(), proxy=proxy.url)
            assert not isinstance(caught.value, ConnectError)
            assert proxy.requests[0][1] == "CONNECT collector.test:443 HTTP/1.1"

    asyncio.run(scenario())


def test_http_through_a_proxy_goes_in_absolute_form():
    async def scenario() -> None:
        async with Server(lambda *_: OK) as proxy:
            await post(client(), "http://collector.test:4318", proxy=f"http://u:p@127.0.0.1:{proxy.port}")
            _, line, headers = proxy.requests[0]
            assert line == "POST http://collector.test:4318/v1/traces HTTP/1.1"
            assert headers["Host"] == "collector.test:4318" and headers["Proxy-Authorization"] == "Basic dTpw"

    asyncio.run(scenario())


def test_a_header_that_would_split_the_head_is_refused_before_anything_is_sent():
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            with pytest.raises(ValueError, match="line break"):
                await post(client(), server.url, headers=[("X-Bad", "one\r\nX-Injected: yes")])
            assert server.connections == 0

    asyncio.run(scenario())


def test_an_answer_nobody_asked_for_is_never_taken_as_the_next_requests():
    stale = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"  # a second answer to request 1

    async def scenario() -> None:
        def reply(connection: int, count: int) -> bytes:
            return OK + stale if (connection, count) == (1, 1) else _answer(b"", "X-Real: 1")

        async with Server(reply) as server:
            http = client()
            await post(http, server.url)
            await asyncio.sleep(0.05)
            answer = await post(http, server.url)
            assert (answer.status, answer.headers.get("X-Real")) == (200, "1")  # its own answer, not the stale 500
            assert [number for number, _, _ in server.requests] == [1, 2]  # on a new connection

    asyncio.run(scenario())


def test_the_callers_host_replaces_the_urls_and_its_framing_headers_are_not_sent():
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            http = client()
            for _ in range(2):  # the second on the same connection: the framing held
                await post(http, server.url, headers=[("Host", "collector.example"), ("Content-Length", "1"),
                                                      ("Transfer-Encoding", "chunked"), ("content-type", "a/b"),
                                                      ("Content-Type", "c/d")])
            assert [number for number, _, _ in server.requests] == [1, 1]
            for _, _, headers in server.requests:
                assert headers.getall("Host") == ["collector.example"]
                assert headers.getall("Content-Length") == ["4"] and "Transfer-Encoding" not in headers
                assert headers.getall("Content-Type") == ["c/d"]  # a name given twice: the last, as Go's Header.Set

    asyncio.run(scenario())


def test_a_header_value_beyond_latin_1_goes_as_utf_8_as_go_sends_it():
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            answer = await post(client(), server.url, headers=[("X-Scope-OrgID", "租户"), ("X-Read", "caf\xe9")])
            assert answer.status == 200
            _, _, headers = server.requests[0]
            assert headers["X-Scope-OrgID"].encode("latin-1").decode() == "租户"
            assert headers["X-Read"] == "caf\xe9"  # a value as read off the wire (latin-1) goes back byte for byte

    asyncio.run(scenario())


@pytest.mark.parametrize("reused", [False, True])
def test_an_early_413_to_a_body_the_server_will_not_read_is_the_answer_not_a_reset(reused):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (block := await wire.read_head(reader)) is not None:
            _, headers = wire.parse_head(block)
            if int(headers["Content-Length"]) < 1024:
                await reader.readexactly(int(headers["Content-Length"]))
                writer.write(OK)
                continue
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
            await writer.drain()
            writer.transport.abort()  # the unread body in its buffer: the kernel resets the connection
            return

    async def scenario() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            http = client()
            if reused:
                await post(http, url)
            answer = await post(http, url, body=b"x" * (32 << 20))
            assert (answer.status, answer.body) == (413, b"big")
        finally:
            server.close()

    asyncio.run(scenario())


def test_a_connection_closed_after_an_informational_answer_is_not_retried():
    def reply(connection: int, count: int) -> bytes:
        return OK if count == 1 else Closing(b"HTTP/1.1 100 Continue\r\n\r\n")  # it read the request, then closed

    async def scenario() -> None:
        async with Server(reply) as server:
            http = client()
            await post(http, server.url)
            with pytest.raises(ClientError, match="informational") as caught:
                await post(http, server.url)
            assert not isinstance(caught.value, NoAnswerError)
            assert [number for number, _, _ in server.requests] == [1, 1]  # not sent again

    asyncio.run(scenario())


def test_informational_answers_without_end_are_an_error_after_five_as_in_go():
    async def scenario() -> None:
        async with Server(lambda *_: b"HTTP/1.1 102 Processing\r\n\r\n" * 6 + OK) as server:
            with pytest.raises(ClientError, match="informational"):
                await post(client(), server.url)
        async with Server(lambda *_: b"HTTP/1.1 102 Processing\r\n\r\n" * 5 + OK) as server:
            assert (await post(client(), server.url)).status == 200

    asyncio.run(scenario())


def test_an_https_proxy_is_verified_with_the_tls_given_as_go_uses_its_tls_config_for_it(certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)  # for localhost, signed by the test CA
    trust = ssl.create_default_context(cafile=certs.ca_file)

    async def scenario() -> None:
        async with Server(lambda *_: OK, ssl_context=context) as proxy:  # answers the absolute-form request itself
            answer = await post(client(), "http://collector.test:4318", tls=trust,
                                proxy=f"https://localhost:{proxy.port}")
            assert answer.body == b"ok"
            assert proxy.requests[0][1] == "POST http://collector.test:4318/v1/traces HTTP/1.1"

    asyncio.run(scenario())


def test_an_answer_with_both_framings_is_read_chunked_as_go_reads_it_and_its_connection_not_reused():
    both = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"

    async def scenario() -> None:
        async with Server(lambda *_: both) as server:
            http = client()
            for _ in range(2):
                assert (await post(http, server.url)).body == b"ok"  # not an error retried forever
            assert [number for number, _, _ in server.requests] == [1, 2]  # a possible splitting: never reused

    asyncio.run(scenario())


def test_a_folded_header_in_an_answer_is_unfolded_as_rfc_9112_asks_of_a_client():
    folded = b"HTTP/1.1 200 OK\r\nX-Long: one\r\n\t two\r\nContent-Length: 2\r\n\r\nok"

    async def scenario() -> None:
        async with Server(lambda *_: folded) as server:
            answer = await post(client(), server.url)
            assert (answer.status, answer.headers["X-Long"], answer.body) == (200, "one two", b"ok")

    asyncio.run(scenario())


class Stalling:
    """An upstream that answers a request whose body exceeds `reads` bytes as soon as its head came
    (`early`), then stops reading, holding the connection open; a shorter one it reads and answers
    OK. Its socket's receive buffer is small, so a stalled body fills the client's buffers at once."""

    def __init__(self, early: bytes, reads: int = 1024, ssl_context: ssl.SSLContext | None = None):
        self.early, self.reads, self.ssl_context = early, reads, ssl_context
        self.connections = 0
        self.done = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Stalling:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # accepted sockets inherit it
        sock.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._serve, sock=sock, ssl=self.ssl_context)
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        self.done.set()
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()  # a connection waiting for its next request ends
        await asyncio.wait_for(asyncio.gather(*self._handlers), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.append(writer)
        try:
            while (block := await wire.read_head(reader)) is not None:
                length = int(wire.parse_head(block)[1]["Content-Length"])
                if length <= self.reads:
                    await reader.readexactly(length)
                    writer.write(OK)
                    continue
                writer.transport.pause_reading()  # the kernel's buffers fill, not the stream's
                writer.write(self.early)
                await asyncio.wait_for(self.done.wait(), 30)  # the body is never read
                return
        finally:
            writer.close()


def stalling_client() -> HttpClient:
    return HttpClient(ClientSettings(send_buffer=4096))


@pytest.mark.parametrize("status, tls", [(413, False), (401, False), (413, True)])
def test_an_early_answer_to_a_body_the_server_stops_reading_is_returned_without_waiting_for_the_write(
        status, tls, certs):
    early = f"HTTP/1.1 {status} No\r\nContent-Length: 3\r\n\r\nbig".encode()
    context, options = None, {}
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.server_cert, certs.server_key)
        options = {"tls": ssl.create_default_context(cafile=certs.ca_file), "server_hostname": "localhost"}

    async def scenario() -> None:
        async with Stalling(early, ssl_context=context) as server:
            http = stalling_client()
            await post(http, server.url, **options)
            started = time.monotonic()
            answer = await post(http, server.url, body=b"x" * (4 << 20), **options)  # `post` allows 5 s
            assert time.monotonic() - started < 1.0
            assert (answer.status, answer.body) == (status, b"big")
            assert http.pool.idle_count() == 0  # the unwritten body's connection is closed
            await post(http, server.url, **options)
            assert server.connections == 2

    asyncio.run(scenario())


def test_an_early_2xx_while_the_body_is_unwritten_is_not_taken_as_delivered():
    async def scenario() -> None:
        async with Stalling(OK) as server:
            http = stalling_client()
            started = time.monotonic()
            with pytest.raises(ClientError, match="before the request was sent") as caught:
                await post(http, server.url, body=b"x" * (4 << 20))
            assert time.monotonic() - started < 1.0
            assert not isinstance(caught.value, NoAnswerError)  # not sent again here: the export chain decides
            assert server.connections == 1 and http.pool.idle_count() == 0

    asyncio.run(scenario())


def test_a_request_given_up_before_its_answer_does_not_go_on_reaching_the_server():
    """Its connection was closed as a finished one is: the bytes of the request the kernel still held
    went on over the link after it (slowing the requests that followed), and once all there the
    server took the request the client had given up: on a slow link each timed-out attempt arrived
    in full, a duplicate of what the client sent again."""
    body = b"x" * (300 << 10)  # all of it in the client's socket buffer when the timeout comes
    got: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1.0)  # reads nothing until the client gave up: a slow link
        taken = 0
        try:
            block = await wire.read_head(reader)
            if block is not None:
                length = int(wire.parse_head(block)[1]["Content-Length"])
                while taken < length and (data := await reader.read(65536)):
                    taken += len(data)
        except ConnectionError:
            pass
        got.append(taken)
        writer.close()

    async def scenario() -> None:
        listening = socket.socket()
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a link's: what is sent waits client-side
        listening.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(serve, sock=listening)
        port = listening.getsockname()[1]
        http = HttpClient(ClientSettings(send_buffer=1 << 20))
        try:
            with pytest.raises(TimeoutError):
                await http.request("POST", f"http://127.0.0.1:{port}/v1/traces", body=body, timeout=0.3)
            for _ in range(300):  # at most 3 s for the server to read what reaches it
                if got:
                    break
                await asyncio.sleep(0.01)
        finally:
            server.close()

    asyncio.run(scenario())
    assert got and got[0] < len(body), "the request given up reached the server in full"


def test_a_link_local_url_with_its_zone_escaped_reaches_that_zone():
    """`http://[fe80::1%25eth0]:4318` is how a URL writes a link-local address and its zone (RFC 6874;
    Go's url.Parse reads the zone as `eth0`, and otelcol connects): the client looked up
    `fe80::1%25eth0`, an interface named `25eth0`, and no request ever went out."""
    host = link_local()
    if host is None:
        pytest.skip("no IPv6 link-local address on this host")
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(OK)
        await writer.drain()
        writer.close()

    async def scenario() -> int:
        server = await asyncio.start_server(serve, host, 0)
        address, zone = host.split("%")
        url = f"http://[{address}%25{zone}]:{server.sockets[0].getsockname()[1]}/v1/traces"
        client = HttpClient(ClientSettings())
        try:
            return (await client.request("POST", url, body=b"{}", timeout=5)).status
        finally:
            await client.close()
            server.close()

    assert asyncio.run(scenario()) == 200
    assert f"Host: [{host.replace('%', '%25')}]:".encode() in heads[0]  # as Go sends it: the URL's own
