"""The HTTP/1.1 client through a real SOCKS5 proxy on loopback (tests.helpers.socks_proxy): the
handshake as Go's net/http makes it (no-auth, RFC 1929 username/password from the URL, the target
as a domain name unless it is an address), plain HTTP in origin form and TLS with the target
through it, and proxies that refuse, close, answer garbage or hang."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from edgeagent.http1.client import ClientError
from tests.helpers.net import free_port
from tests.helpers.socks_proxy import SocksProxy
from tests.http1.test_client import OK, Server, client, post


@pytest.fixture
def socks():
    proxy = SocksProxy(free_port()).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def socks_with_password():
    proxy = SocksProxy(free_port(), credentials=("edge", "s3cr@t")).start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_http_goes_through_socks_with_the_target_as_a_name_and_the_request_in_origin_form(socks, scheme):
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            http = client()
            for _ in range(2):  # collector.test is reachable through the proxy only
                answer = await post(http, f"http://collector.test:{server.port}", proxy=socks.url(scheme))
                assert answer.body == b"ok"
            assert server.connections == 1  # the tunnel is kept alive and reused

    asyncio.run(scenario())
    [request] = socks.requests
    assert request.methods == b"\x00"  # no credentials: no-auth only, as Go
    assert (request.address_type, request.host) == (3, "collector.test")  # never resolved here, as Go
    assert request.first_line == "POST /v1/traces HTTP/1.1"  # not the absolute form of an HTTP proxy


def test_an_address_target_goes_as_an_address(socks):
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            await post(client(), server.url, proxy=socks.url())
            assert socks.requests[0].port == server.port

    asyncio.run(scenario())
    assert (socks.requests[0].address_type, socks.requests[0].host) == (1, "127.0.0.1")


def test_https_goes_through_socks_with_tls_made_with_the_target(socks, certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    trust = ssl.create_default_context(cafile=certs.ca_file)

    async def scenario() -> None:
        async with Server(lambda *_: OK, ssl_context=context) as server:
            url = f"https://collector.test:{server.port}"
            answer = await post(client(), url, tls=trust, server_hostname="localhost", proxy=socks.url("socks5h"))
            assert answer.body == b"ok"
            with pytest.raises(ClientError, match="certificate"):  # the name verified is the target's
                await post(client(), url, tls=trust, proxy=socks.url("socks5h"))

    asyncio.run(scenario())
    assert socks.requests[0].host == "collector.test"
    assert socks.requests[0].first_line == "(binary)"  # a TLS ClientHello, not HTTP


def test_credentials_in_the_url_go_as_rfc1929_username_and_password(socks_with_password):
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            proxy = socks_with_password.url(userinfo="edge:s3cr%40t")  # percent-encoded in the URL
            answer = await post(client(), f"http://collector.test:{server.port}", proxy=proxy)
            assert answer.body == b"ok"

    asyncio.run(scenario())
    [request] = socks_with_password.requests
    assert request.methods == b"\x00\x02"  # no-auth and username/password offered, as Go
    assert (request.username, request.password) == ("edge", "s3cr@t")


def test_a_wrong_password_is_a_clear_client_error(socks_with_password):
    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            proxy = socks_with_password.url(userinfo="edge:wrong")
            with pytest.raises(ClientError, match="username/password authentication failed"):
                await post(client(), f"http://collector.test:{server.port}", proxy=proxy)
            assert server.connections == 0

    asyncio.run(scenario())


def test_a_proxy_that_wants_credentials_we_lack_is_a_clear_client_error(socks_with_password):
    async def scenario() -> None:
        with pytest.raises(ClientError, match="no acceptable authentication method"):
            await post(client(), "http://collector.test:4318", proxy=socks_with_password.url())

    asyncio.run(scenario())


def test_a_target_the_proxy_cannot_reach_is_a_clear_client_error(socks):
    closed = free_port()

    async def scenario() -> None:
        with pytest.raises(ClientError, match="connection refused"):
            await post(client(), f"http://collector.test:{closed}", proxy=socks.url())

    asyncio.run(scenario())


@pytest.mark.parametrize("behaviour, message", [("close", "closed the connection during the SOCKS5 handshake"),
                                                ("garbage", "not a SOCKS5 answer")])
def test_a_proxy_that_closes_or_answers_garbage_is_a_clear_client_error(behaviour, message):
    proxy = SocksProxy(free_port(), behaviour=behaviour).start()

    async def scenario() -> None:
        with pytest.raises(ClientError, match=message):
            await post(client(), "http://collector.test:4318", proxy=proxy.url())

    try:
        started = time.monotonic()
        asyncio.run(scenario())
        assert time.monotonic() - started < 2  # at once, not at the request's timeout
    finally:
        proxy.stop()


def test_a_proxy_that_hangs_in_the_handshake_is_bounded_by_the_timeout():
    proxy = SocksProxy(free_port(), behaviour="hang").start()

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await client().request("POST", "http://collector.test:4318/v1/traces", body=b"x", timeout=0.5,
                                   proxy=proxy.url())

    try:
        started = time.monotonic()
        asyncio.run(scenario())
        assert time.monotonic() - started < 2
    finally:
        proxy.stop()


def test_the_proxy_port_defaults_to_1080():
    proxy = SocksProxy(1080)
    try:
        proxy.start()
    except OSError:  # another program's, or another run's at the same moment
        proxy.stop()
        pytest.skip("port 1080 is taken here")

    async def scenario() -> None:
        async with Server(lambda *_: OK) as server:
            answer = await post(client(), f"http://collector.test:{server.port}", proxy="socks5://127.0.0.1")
            assert answer.body == b"ok"

    try:
        asyncio.run(scenario())
        assert len(proxy.requests) == 1
    finally:
        proxy.stop()
