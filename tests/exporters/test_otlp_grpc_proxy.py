"""The `otlp` exporter behind the proxy the environment names, as otelcol's grpc-go goes through it:
HTTPS_PROXY (never HTTP_PROXY) for the target, NO_PROXY and loopback targets direct, an HTTP
CONNECT naming the target unresolved, then gRPC (TLS included) inside the tunnel. A real proxy
on loopback (`tests.helpers.http_proxy`, which reaches every host at 127.0.0.1, so
`collector.test` exists through it only); the agent's own gRPC server as the target, and the real
agent process sending to a grpcio server."""

from __future__ import annotations

import asyncio
import base64
import socket

import pytest

from edgeagent import __version__, tls
from edgeagent.configretry import RetryConfig
from edgeagent.errors import RetryableError
from edgeagent.exporters.chain import ExportChain
from edgeagent.exporters.grpc_client import Channel
from edgeagent.exporters.grpc_connection import ChannelSettings, GrpcStatusError
from edgeagent.exporters.grpc_dial import proxy_address
from edgeagent.exporters.link import Link
from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from edgeagent.grpc_status import StatusCode
from edgeagent.signals import Signal
from tests.exporters.test_chain import Host
from tests.exporters.test_grpc_client import Recorder, _request
from tests.helpers.configs import grpc_exporter, traces_config
from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.http_proxy import HttpProxy
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans

BASIC = "Basic " + base64.b64encode(b"edge:s3cret").decode()
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_from_outside(monkeypatch):
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy():
    server = HttpProxy(free_port()).start()
    yield server
    server.stop()


def _exporter(endpoint: str, **settings: object) -> OtlpGrpcExporter:
    config = OtlpGrpcConfig.model_validate({"endpoint": endpoint, "tls": {"insecure": True}, "timeout": "3s",
                                            **settings})
    return OtlpGrpcExporter("otlp", config)


async def _send(exporter: OtlpGrpcExporter, *bodies: bytes) -> None:
    await exporter.start()
    try:
        for body in bodies:
            await exporter.send(Signal.TRACES, body)
    finally:
        await exporter.shutdown()


@pytest.mark.parametrize("variable, form", [
    ("HTTPS_PROXY", "http://edge:s3cret@127.0.0.1:{port}"),
    ("https_proxy", "edge:s3cret@127.0.0.1:{port}"),  # without a scheme: an http:// proxy, as Go reads it
    ("HTTPS_PROXY", "https://edge:s3cret@127.0.0.1:{port}"),  # grpc-go speaks plaintext CONNECT to it all the same
])
def test_spans_go_through_the_https_proxy_in_a_connect_tunnel_naming_the_unresolved_target(proxy, monkeypatch,
                                                                                           variable, form):
    monkeypatch.setenv(variable, form.format(port=proxy.port))
    body = _request(20)

    async def scenario() -> list[bytes]:
        async with Recorder() as server:
            exporter = _exporter(f"collector.test:{server.port}", user_agent="acme-edge/2")
            await exporter.start()
            assert exporter.upstream_addresses() == [("127.0.0.1", proxy.port)]  # where connections go
            await exporter.shutdown()
            await _send(_exporter(f"collector.test:{server.port}", user_agent="acme-edge/2"), body, body)
            target = f"collector.test:{server.port}"
        assert [request.line for request in proxy.requests] == [f"CONNECT {target} HTTP/1.1"]  # one connection
        return [message for _, _, message in server.calls]

    assert asyncio.run(scenario()) == [body, body]  # collector.test is reachable through the proxy only
    assert proxy.requests[0].proxy_authorization == BASIC
    assert proxy.requests[0].user_agent == f"acme-edge/2 edgeagent/{__version__}"  # the calls' own, as grpc-go


def test_the_targets_first_bytes_sent_with_the_proxys_answer_are_kept_for_http2(proxy, monkeypatch):
    # grpc-go keeps what its reader took past the answer (bufConn): an h2c server's SETTINGS may come with it
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    proxy.coalesce = True
    body = _request(4)

    async def scenario() -> list[bytes]:
        async with Recorder() as server:
            await _send(_exporter(f"collector.test:{server.port}"), body)
        return [message for _, _, message in server.calls]

    assert asyncio.run(scenario()) == [body]


@pytest.mark.parametrize("established", [b"HTTP/1.1 200 Connection established\n\n",
                                         b"HTTP/1.1 200 OK\nVia: 1.1 proxy\n\r\n"], ids=["lf", "mixed"])
def test_a_proxys_answer_with_lines_ending_in_bare_lf_opens_the_tunnel_as_go_reads_it(proxy, monkeypatch,
                                                                                     established):
    # Go's ReadResponse (grpc-go's) ends a line at LF; waiting for CRLF CRLF failed at the deadline.
    # The target's SETTINGS come in the same segment: exactly the head is taken, not a byte more
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    proxy.established, proxy.coalesce = established, True
    body = _request(2)

    async def scenario() -> list[bytes]:
        async with Recorder() as server:
            await _send(_exporter(f"collector.test:{server.port}"), body)
        return [message for _, _, message in server.calls]

    assert asyncio.run(scenario()) == [body]


def test_a_proxy_without_a_port_is_reached_on_443_as_grpc_go_resolves_it():
    assert proxy_address("http://proxy.corp") == ("proxy.corp", 443)
    assert proxy_address("https://edge:s3cret@[fd00::3]:3128") == ("fd00::3", 3128)


def test_http_proxy_is_not_for_grpc_and_no_proxy_and_loopback_targets_go_direct(proxy, monkeypatch):
    body = _request(3)

    async def scenario() -> None:
        async with Recorder() as server:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)  # grpc-go asks for the proxy of https://target only
            with pytest.raises(RetryableError, match="cannot resolve collector.test"):
                await _send(_exporter(f"collector.test:{server.port}"), body)
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", "example.com,collector.test")
            with pytest.raises(RetryableError, match="cannot resolve collector.test"):
                await _send(_exporter(f"collector.test:{server.port}"), body)
            monkeypatch.delenv("NO_PROXY")
            await _send(_exporter(f"127.0.0.1:{server.port}"), body)  # loopback: never proxied, as Go
            await _send(_exporter(f"localhost:{server.port}"), body)
            assert proxy.requests == []
            await _send(_exporter(f"collector.test:{server.port}"), body)  # and the rest through the proxy
        assert len(server.calls) == 3

    asyncio.run(scenario())
    assert len(proxy.requests) == 1


@pytest.mark.parametrize("answer, said", [
    (b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n",
     "407 Proxy Authentication Required"),
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "403 Forbidden"),
    (b"HTTP/1.1 201 Created\r\n\r\n", "201 Created"),  # grpc-go takes 200 only
    (b"", "closed the connection"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "SSH-2.0-OpenSSH_9.6"),
], ids=["407", "403", "201", "closed", "garbage"])
def test_a_refused_tunnel_ends_unavailable_naming_the_proxy_and_the_data_arrives_once_it_is_fixed(
        proxy, monkeypatch, caplog, answer, said):
    monkeypatch.setenv("HTTPS_PROXY", f"http://edge:s3cret@127.0.0.1:{proxy.port}")
    proxy.answer = answer
    body = _request(5)

    async def scenario() -> list[bytes]:
        async with Recorder() as server:
            exporter = _exporter(f"collector.test:{server.port}")
            host = Host()
            retry = RetryConfig(initial_interval=0.05, max_interval=0.1, max_elapsed_time=0)
            chain = ExportChain(exporter, Signal.TRACES, host, timeout=3, retry=retry,
                                link=Link(2, retry, lambda _: None))
            await exporter.start()
            try:
                export = asyncio.create_task(chain.export([(body, 5)]))
                for _ in range(500):  # at most 5 s for a few attempts
                    if sum("retrying" in record.getMessage() for record in caplog.records) >= 3:
                        break
                    await asyncio.sleep(0.01)
                problem = host.problems["otlp"] or ""
                assert "UNAVAILABLE" in problem and said in problem, problem
                assert f"http://***@127.0.0.1:{proxy.port}" in problem and "s3cret" not in problem
                assert server.calls == []
                proxy.answer = None  # the proxy lets the tunnel through now
                await asyncio.wait_for(export, 10)
            finally:
                await exporter.shutdown()
            return [message for _, _, message in server.calls]

    with caplog.at_level("DEBUG", logger="edgeagent.exporters"):
        assert asyncio.run(scenario()) == [body]
    assert len(proxy.requests) >= 3


def test_tls_with_the_target_is_made_inside_the_tunnel(proxy, monkeypatch, certs):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    body = _request(7)

    async def scenario() -> list[bytes]:
        recorder = Recorder()
        server_tls = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)
        recorder.server.ssl_context = tls.server_ssl_context(server_tls, alpn=["h2"])
        async with recorder as server:
            config = OtlpGrpcConfig.model_validate({
                "endpoint": f"collector.test:{server.port}",
                "tls": {"ca_file": certs.ca_file, "server_name_override": "localhost"}})  # the certificate's name
            await _send(OtlpGrpcExporter("otlp", config), body)
            assert [request.line for request in proxy.requests] == [f"CONNECT collector.test:{server.port} HTTP/1.1"]
        return [message for _, _, message in server.calls]

    assert asyncio.run(scenario()) == [body]


@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "socks4"])
def test_a_proxy_scheme_grpc_cannot_tunnel_through_gets_nothing_and_is_named(proxy, monkeypatch, scheme):
    # grpc-go speaks HTTP CONNECT to whatever the variable names, which a SOCKS server answers by closing
    monkeypatch.setenv("HTTPS_PROXY", f"{scheme}://edge:s3cret@127.0.0.1:{proxy.port}")
    with pytest.raises(RetryableError) as raised:
        asyncio.run(_send(_exporter("collector.test:4317"), _request(1)))
    message = str(raised.value)
    assert f"{scheme}://***@127.0.0.1:{proxy.port}" in message and "s3cret" not in message
    assert "UNAVAILABLE" in message and "http://" in message
    assert proxy.requests == []


def test_a_proxy_that_is_down_is_named_in_the_error(monkeypatch):
    port = free_port()
    monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{port}")
    with pytest.raises(RetryableError, match=f"proxy http://127.0.0.1:{port}") as raised:
        asyncio.run(_send(_exporter("collector.test:4317"), _request(1)))
    assert raised.value.unanswered is True  # nothing answered: the link may watch the proxy's port


@pytest.mark.parametrize("proxy_url", ["http://proxy..corp:3128", "http://" + "a" * 64 + ".corp:3128"])
def test_a_proxy_name_that_cannot_be_encoded_ends_unavailable_naming_the_proxy(monkeypatch, proxy_url):
    # getaddrinfo raises UnicodeError (IDNA), not OSError, for an empty or too long label: it once
    # escaped the exporter, so a receiver answered INTERNAL and its client dropped the data
    monkeypatch.setenv("HTTPS_PROXY", proxy_url)
    with pytest.raises(RetryableError, match="UNAVAILABLE") as raised:
        asyncio.run(_send(_exporter("collector.test:4317"), _request(1)))
    assert f"cannot resolve the proxy {proxy_url}" in str(raised.value)


def test_a_tunnel_failure_of_an_unexpected_kind_ends_unavailable_naming_the_proxy(proxy, monkeypatch):
    # latin-1 superscript digits pass str.isdigit: int() then raised ValueError out of the exporter
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    proxy.answer = b"HTTP/1.1 \xb2\xb2\xb2 x\r\n\r\n"
    with pytest.raises(RetryableError, match="UNAVAILABLE") as raised:
        asyncio.run(_send(_exporter("collector.test:4317"), _request(1)))
    assert f"through the proxy {proxy.url}" in str(raised.value)


@pytest.mark.e2e  # waits seconds by design
def test_waiting_for_ready_behind_a_refusing_proxy_ends_at_the_deadline_with_the_last_connection_error(
        proxy, monkeypatch):
    # grpc-go adds "last connection error" to the deadline's status; a bare "no answer within"
    # told nothing of the proxy refusing every tunnel
    monkeypatch.setenv("HTTPS_PROXY", f"http://edge:s3cret@127.0.0.1:{proxy.port}")
    proxy.answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    exporter = _exporter("collector.test:4317", timeout="1.5s", wait_for_ready=True)
    with pytest.raises(RetryableError, match="DEADLINE_EXCEEDED") as raised:
        asyncio.run(_send(exporter, _request(1)))
    message = str(raised.value)
    assert "last connection error" in message and "403 Forbidden" in message, message
    assert f"http://***@127.0.0.1:{proxy.port}" in message and "s3cret" not in message
    assert len(proxy.requests) >= 2  # it did try again


@pytest.fixture
def silent_proxy():
    """A proxy that accepts connections (the kernel's backlog) and never answers a CONNECT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.mark.parametrize("wait_for_ready", [False, True])
def test_a_proxy_that_never_answers_the_connect_is_named_at_the_calls_deadline(silent_proxy, monkeypatch,
                                                                              wait_for_ready):
    monkeypatch.setenv("HTTPS_PROXY", silent_proxy)
    exporter = _exporter("collector.test:4317", timeout="1s", wait_for_ready=wait_for_ready)
    with pytest.raises(RetryableError, match="DEADLINE_EXCEEDED") as raised:
        asyncio.run(_send(exporter, _request(1)))
    assert f"the proxy {silent_proxy} has not answered the CONNECT" in str(raised.value), str(raised.value)


def test_a_proxy_that_never_answers_the_connect_within_the_connect_timeout_is_named_not_the_target(silent_proxy):
    settings = ChannelSettings("collector.test", 4317, connect_timeout=0.5, proxy=silent_proxy)

    async def scenario() -> None:
        channel = Channel(settings)
        try:
            await channel.unary("/x.Y/Z", b"", timeout=5)
        finally:
            await channel.close()

    with pytest.raises(GrpcStatusError) as raised:
        asyncio.run(scenario())
    assert raised.value.code == StatusCode.UNAVAILABLE
    assert "the proxy did not answer the CONNECT within 0.5s" in raised.value.message, raised.value.message
    assert "HTTP/2" not in raised.value.message


MALFORMED_PROXIES = ["http://edge:h1d/d3n@127.0.0.1:9", "http://edge:h1d#d3n@127.0.0.1:9",
                     "http://edge:h1d?d3n@127.0.0.1:9", "edge:h1d/d3n@127.0.0.1:9", "http://edge:h1dd3n@[::1:9"]


@pytest.mark.parametrize("proxy_url", MALFORMED_PROXIES)
def test_an_unreadable_proxy_url_shows_no_part_of_its_password_in_errors_or_logs(monkeypatch, caplog, proxy_url):
    # urlsplit ends the authority at an unencoded '/', '?' or '#': the password's start read as a port
    # made urllib's error ("... as 'h1d'") and the whole URL, shown unmasked, part of the message
    monkeypatch.setenv("HTTPS_PROXY", proxy_url)
    with caplog.at_level("DEBUG"), pytest.raises(RetryableError, match="UNAVAILABLE") as raised:
        asyncio.run(_send(_exporter("collector.test:4317"), _request(1)))
    said = [str(raised.value), *(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)]
    assert not any("h1d" in text or "d3n" in text for text in said), said
    assert "***@" in str(raised.value) and "cannot be read" in str(raised.value)


def test_the_agent_behind_a_proxy_delivers_its_spans_through_it_and_keeps_them_while_it_refuses(agents, proxy,
                                                                                                tmp_path):
    proxy.answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    upstream = GrpcUpstream(free_port()).start()
    try:
        config = traces_config(tmp_path / "otlp.yaml", {"otlp": grpc_exporter(f"collector.test:{upstream.port}")})
        agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")],
                       env={"HTTPS_PROXY": f"http://edge:s3cret@127.0.0.1:{proxy.port}"})
        sent = send_spans("grpc", agent.grpc_port, 300, batch=100)
        wait_until(lambda: len(proxy.requests) >= 2, timeout=15, message="the export retried through the proxy")
        assert upstream.span_ids() == set()
        proxy.answer = None
        wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="spans upstream through the proxy")
        assert upstream.span_ids() == sent
        assert {request.line for request in proxy.requests} == {f"CONNECT collector.test:{upstream.port} HTTP/1.1"}
        assert agent.terminate() == 0
    finally:
        upstream.stop()
