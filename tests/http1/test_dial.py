"""Opening connections: an address that swallows the connect must not take the whole request's
time from the addresses after it (Go's partial deadlines)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from edgeagent.http1 import dial


def _black_hole() -> tuple[socket.socket, socket.socket]:
    """A listener whose accept queue is full: the kernel drops further SYNs, a connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    queued = socket.create_connection(listener.getsockname())
    return listener, queued


def test_an_address_that_never_accepts_leaves_time_for_the_next():
    async def scenario() -> None:
        listener, queued = _black_hole()
        server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
        try:
            addresses = [listener.getsockname(), server.sockets[0].getsockname()]
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(3) as scope:
                sock = await dial.connect_first(
                    [(socket.AF_INET, socket.SOCK_STREAM, 0, "", address) for address in addresses],
                    send_buffer=0, deadline=scope.when())
            assert sock.getpeername() == addresses[1]
            assert loop.time() < scope.when()  # the black hole had its share (2 s), not all 3 s
            sock.close()
        finally:
            server.close()
            listener.close()
            queued.close()

    asyncio.run(scenario())


def test_a_connect_reset_as_it_was_accepted_is_an_answer_not_an_unreachable_upstream():
    # A busy loop sees the reset of a server that accepts and resets before it sees the connect
    # complete; something listens there, so the exporter must not take it for "nothing there".
    reset = dial.connect_failure([ConnectionRefusedError(111, "refused"), ConnectionResetError(104, "reset")])
    assert isinstance(reset, dial.ClientError) and not isinstance(reset, dial.ConnectError)
    refused = dial.connect_failure([ConnectionRefusedError(111, "refused"), TimeoutError()])
    assert isinstance(refused, dial.ConnectError)


@pytest.mark.parametrize("proxy, shown", [
    ("http://edge:h1dd3n@proxy.corp:3128", "http://***@proxy.corp:3128"),
    ("http://edge:h1d/d3n@proxy.corp:3128", "http://***@proxy.corp:3128"),  # urlsplit's netloc ends at the '/'
    ("socks5://edge:h1d#d3n@proxy.corp:1080", "socks5://***@proxy.corp:1080"),
    ("http://edge:h1d?d3n@proxy.corp:3128", "http://***@proxy.corp:3128"),
    ("http://edge:h1d@d3n@proxy.corp:3128", "http://***@proxy.corp:3128"),
    ("edge:h1d/d3n@proxy.corp:3128", "***@proxy.corp:3128"),  # no scheme
    ("http://proxy.corp:3128", "http://proxy.corp:3128"),
])
def test_a_proxy_is_shown_without_what_is_before_its_last_at_sign_even_past_a_delimiter(proxy, shown):
    assert dial.shown_proxy(proxy) == shown


def test_an_upstream_connection_keeps_alive_so_a_vanished_peer_is_found_without_a_timeout():
    # as Go's net.Dialer for otelcol: keepalive probes after 15 s idle, every 15 s. Without them an
    # exporter with `timeout: 0` waited for ever for the answer of a peer gone without a reset
    async def scenario() -> tuple[int, int, int]:
        server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            addresses = await asyncio.get_running_loop().getaddrinfo("127.0.0.1", port, type=socket.SOCK_STREAM)
            sock = await dial.connect_first(addresses, send_buffer=0, deadline=None)
            try:
                return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL))
            finally:
                sock.close()
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == (1, 15, 15)
