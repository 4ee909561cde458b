"""otlphttp's confighttp client keys (otelcol's names): proxy_url and the environment's proxies,
the connection pool (keepalive, max_conns_per_host), cookies, compression_params, middlewares
and the HTTP/2 keys; against real servers and a real proxy on loopback."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import ssl
import zlib
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError

from edgeagent.configretry import RetryConfig
from edgeagent.errors import RetryableError, ShutdownError
from edgeagent.exporters.chain import ExportChain
from edgeagent.exporters.encoding import compress
from edgeagent.exporters.httpclient import Proxies
from edgeagent.exporters.link import Link
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.signals import Signal
from tests.exporters.test_chain import Host
from tests.helpers.certs import make_certs
from tests.helpers.http_proxy import HttpProxy
from tests.helpers.net import free_port
from tests.helpers.socks_proxy import SocksProxy
from tests.helpers.upstream import Upstream


@pytest.fixture
def upstream():
    server = Upstream(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def socks():
    server = SocksProxy(free_port(), credentials=("edge", "s3cret")).start()
    yield server
    server.stop()


@pytest.fixture
def proxy():
    server = HttpProxy(free_port()).start()
    yield server
    server.stop()


async def _send(config: OtlpHttpConfig, times: int = 1) -> None:
    exporter = OtlpHttpExporter("otlphttp", config)
    await exporter.start()
    try:
        for _ in range(times):
            await exporter.send(Signal.TRACES, b"")
    finally:
        await exporter.shutdown()


def test_proxy_url_carries_the_requests_and_its_credentials_as_proxy_authorization(upstream, proxy):
    proxy_url = f"http://edge:s3cret@127.0.0.1:{proxy.port}"
    asyncio.run(_send(OtlpHttpConfig(endpoint=f"http://collector.test:{upstream.port}", proxy_url=proxy_url)))
    assert len(upstream.received("traces")) == 1  # collector.test is reachable through the proxy only
    assert proxy.requests[0].line == f"POST http://collector.test:{upstream.port}/v1/traces HTTP/1.1"
    assert proxy.requests[0].proxy_authorization == "Basic " + base64.b64encode(b"edge:s3cret").decode()
    assert "proxy-authorization" not in {name.lower() for name in upstream.received("traces")[0].headers}


def test_https_goes_through_a_connect_tunnel(proxy, tmp_path):
    certs = make_certs(str(tmp_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    server = Upstream(free_port(), ssl_context=context).start()
    try:  # the certificate names localhost
        config = OtlpHttpConfig(endpoint=f"https://collector.test:{server.port}", proxy_url=proxy.url,
                                tls={"ca_file": certs.ca_file, "server_name_override": "localhost"})
        asyncio.run(_send(config))
        assert len(server.received("traces")) == 1
        assert proxy.requests[0].line == f"CONNECT collector.test:{server.port} HTTP/1.1"
    finally:
        server.stop()


def test_the_environments_proxy_is_used_unless_no_proxy_or_loopback(upstream, proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    asyncio.run(_send(OtlpHttpConfig(endpoint=f"http://collector.test:{upstream.port}")))
    assert len(proxy.requests) == 1 and len(upstream.received("traces")) == 1
    asyncio.run(_send(OtlpHttpConfig(endpoint=upstream.url)))  # a loopback address: never proxied, as Go
    assert len(proxy.requests) == 1 and len(upstream.received("traces")) == 2
    monkeypatch.setenv("NO_PROXY", "collector.test")
    with pytest.raises(Exception, match="unreachable"):  # not proxied, and collector.test resolves nowhere
        asyncio.run(_send(OtlpHttpConfig(endpoint=f"http://collector.test:{upstream.port}", timeout="2s")))
    assert len(proxy.requests) == 1


@pytest.mark.parametrize("proxy_url", ["proxy:3128", "socks4://127.0.0.1:1080", "socks5://", "ftp://proxy:21"])
def test_a_proxy_edgeagent_cannot_use_is_refused(proxy_url):
    with pytest.raises(ValidationError, match="absolute http://, https://, socks5:// or socks5h:// URL"):
        OtlpHttpConfig(endpoint="http://collector:4318", proxy_url=proxy_url)


@pytest.mark.parametrize("proxy_url", ["socks5://proxy", "socks5h://edge:s3cret@proxy:1080", "SOCKS5://proxy:9050"])
def test_socks5_proxies_are_accepted_as_otelcol_accepts_them(proxy_url):
    assert OtlpHttpConfig(endpoint="http://collector:4318", proxy_url=proxy_url).proxy_url == proxy_url


def test_proxy_url_socks5_carries_the_data_with_its_credentials(upstream, socks):
    config = OtlpHttpConfig(endpoint=f"http://collector.test:{upstream.port}",
                            proxy_url=socks.url(userinfo="edge:s3cret"))
    asyncio.run(_send(config, times=2))
    assert len(upstream.received("traces")) == 2  # collector.test is reachable through the proxy only
    [request] = socks.requests  # one connection, kept alive
    assert (request.username, request.password, request.address_type, request.host) == \
        ("edge", "s3cret", 3, "collector.test")
    assert request.first_line == "POST /v1/traces HTTP/1.1"


def test_a_wrong_socks_password_is_retryable_and_never_shown(upstream, socks):
    config = OtlpHttpConfig(endpoint=f"http://collector.test:{upstream.port}",
                            proxy_url=socks.url(userinfo="edge:wr0ng"))
    with pytest.raises(RetryableError, match="username/password authentication failed") as caught:
        asyncio.run(_send(config))  # the sender keeps the data and tries again
    assert "wr0ng" not in str(caught.value)
    assert upstream.received("traces") == []


def test_the_environments_socks_proxy_carries_https_unless_no_proxy(socks, tmp_path, monkeypatch):
    certs = make_certs(str(tmp_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    server = Upstream(free_port(), ssl_context=context).start()
    monkeypatch.setenv("HTTPS_PROXY", socks.url("socks5h", userinfo="edge:s3cret"))
    config = OtlpHttpConfig(endpoint=f"https://collector.test:{server.port}", timeout="2s",
                            tls={"ca_file": certs.ca_file, "server_name_override": "localhost"})
    try:
        asyncio.run(_send(config))
        assert len(server.received("traces")) == 1
        assert [(request.host, request.port, request.first_line) for request in socks.requests] == \
            [("collector.test", server.port, "(binary)")]  # TLS with the target through the proxy
        monkeypatch.setenv("NO_PROXY", "collector.test")
        with pytest.raises(RetryableError, match="unreachable"):  # not proxied; collector.test resolves nowhere
            asyncio.run(_send(config))
        assert len(socks.requests) == 1
    finally:
        server.stop()


class _Recorder:
    """A server that counts the connections requests arrive on, and answers after `delay`."""

    def __init__(self, delay: float = 0.0, cookie: str | None = None):
        self.delay, self.cookie = delay, cookie
        self.connections: set[tuple] = set()
        self.cookies: list[str | None] = []
        self.busy = self.most_busy = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.connections.add(request.transport.get_extra_info("peername") if request.transport else None)
        self.cookies.append(request.headers.get("Cookie"))
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        await asyncio.sleep(self.delay)
        self.busy -= 1
        response = web.Response()
        if self.cookie:
            response.set_cookie("session", self.cookie)
        return response


async def _against(recorder: _Recorder, settings: dict, concurrent: int, rounds: int = 1,
                   pause: float = 0.0) -> OtlpHttpExporter:
    """`rounds` of `concurrent` sends to the recorder; the exporter (shut down) to inspect."""
    app = web.Application()
    app.router.add_post("/v1/traces", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://127.0.0.1:{port}", **settings))
    await exporter.start()
    try:
        for _ in range(rounds):
            await asyncio.gather(*(exporter.send(Signal.TRACES, b"") for _ in range(concurrent)))
            await asyncio.sleep(pause)
        exporter.idle_after = exporter._client.pool.idle_count()
    finally:
        await exporter.shutdown()
        await runner.cleanup()
    return exporter


def test_keepalive_disabled_opens_a_connection_per_request():
    recorder = _Recorder()
    asyncio.run(_against(recorder, {"keepalive": {"enabled": False}}, concurrent=1, rounds=3))
    assert len(recorder.connections) == 3
    recorder = _Recorder()
    asyncio.run(_against(recorder, {}, concurrent=1, rounds=3))
    assert len(recorder.connections) == 1


def test_max_conns_per_host_bounds_the_requests_in_flight():
    recorder = _Recorder(delay=0.1)
    asyncio.run(_against(recorder, {"max_conns_per_host": 2}, concurrent=6))
    assert recorder.most_busy == 2 and len(recorder.connections) == 2


def test_max_idle_conns_per_host_closes_the_connections_beyond_it():
    recorder = _Recorder(delay=0.1)
    exporter = asyncio.run(_against(recorder, {"keepalive": {"max_idle_conns_per_host": 1}}, concurrent=4, rounds=2))
    assert exporter.idle_after == 1
    assert len(recorder.connections) == 7  # 4, then the one kept and 3 new ones
    exporter = asyncio.run(_against(_Recorder(delay=0.1), {"keepalive": {"max_idle_conns": 3}}, concurrent=4))
    assert exporter.idle_after == 2  # max_idle_conns_per_host unset: Go's 2 per host


@pytest.mark.e2e  # takes seconds: waits out an idle timeout
def test_idle_conn_timeout_closes_an_idle_connection():
    recorder = _Recorder()
    asyncio.run(_against(recorder, {"keepalive": {"idle_conn_timeout": "100ms"}}, concurrent=1, rounds=2, pause=1.5))
    assert len(recorder.connections) == 2
    recorder = _Recorder()
    asyncio.run(_against(recorder, {"keepalive": {"idle_conn_timeout": "10s"}}, concurrent=1, rounds=2, pause=1.5))
    assert len(recorder.connections) == 1


def test_cookies_are_kept_and_sent_back_only_with_cookies_set():
    recorder = _Recorder(cookie="abc")
    asyncio.run(_against(recorder, {}, concurrent=1, rounds=2))
    assert recorder.cookies == [None, None]
    recorder = _Recorder(cookie="abc")
    asyncio.run(_against(recorder, {"cookies": {}}, concurrent=1, rounds=2))
    assert recorder.cookies == [None, "session=abc"]


@pytest.mark.parametrize("encoding, level", [("gzip", 9), ("gzip", -1), ("gzip", -2), ("zlib", 5),
                                             ("deflate", 1), ("zstd", 19), ("zstd", -5)])
def test_compression_params_level_gives_a_body_the_upstream_reads(upstream, encoding, level):
    asyncio.run(_send(OtlpHttpConfig(endpoint=upstream.url, compression=encoding,
                                     compression_params={"level": level})))
    assert len(upstream.received("traces")) == 1


def test_compression_levels_are_zlibs():
    words = [b"checkout", b"cart", b"payment", b"GET", b"POST", b"200", b"503", b"user", b"span", b"trace"]
    body = b" ".join(words[(i * 7919) % 97 % len(words)] + b"%d" % (i * 31337 % 1000) for i in range(5000))
    assert gzip.decompress(compress("gzip", body, 9)) == body
    assert len(compress("gzip", body, 9)) < len(compress("gzip", body, 1)) < len(compress("gzip", body, -2))
    assert zlib.decompress(compress("zlib", body, -1)) == body


def test_the_default_level_sends_what_zlibs_level_1_sends_whichever_library_compresses():
    """zlib-ng writes gzip, zlib and deflate where installed; its default level makes the size zlib's
    level 1 made, so a link's bytes do not grow. Without it (no wheel), the standard library's."""
    import subprocess
    import sys

    from tests.helpers.bodies import ordinary_traces

    body = ordinary_traces(2048)
    zlib_1 = len(gzip.compress(body, 1))
    for encoding, decode in (("gzip", gzip.decompress), ("zlib", zlib.decompress),
                             ("deflate", zlib.decompress)):
        sent = compress(encoding, body)
        assert decode(sent) == body
        assert len(sent) <= zlib_1 * 1.02, (encoding, len(sent), zlib_1)
    script = ("import sys, gzip; sys.modules['zlib_ng'] = None\n"
              "from edgeagent.exporters import encoding\n"
              "from tests.helpers.bodies import ordinary_traces\n"
              "body = ordinary_traces(256)\n"
              "assert encoding._deflate.__name__ == 'zlib' and encoding.DEFAULT_DEFLATE_LEVEL == 1\n"
              "assert encoding.compress('gzip', body) and gzip.decompress(encoding.compress('gzip', body)) == body\n"
              "assert gzip.decompress(encoding.compress('gzip', body, 9)) == body\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("encoding, level, message", [("gzip", 10, "use -1"), ("gzip", -3, "use -1"),
                                                      ("snappy", 3, "takes no level"), ("lz4", 1, "takes no level"),
                                                      ("none", 5, "without compression")])
def test_a_level_otelcol_refuses_is_refused(encoding, level, message):
    with pytest.raises(ValidationError, match=message):
        OtlpHttpConfig(endpoint="http://collector:4318", compression=encoding, compression_params={"level": level})


def test_client_middlewares_only_empty():
    assert OtlpHttpConfig(endpoint="http://collector:4318", middlewares=[]).middlewares == []
    with pytest.raises(ValidationError, match="no extension can be an HTTP client middleware"):
        OtlpHttpConfig(endpoint="http://collector:4318", middlewares=[{"id": "headers_setter"}])


def test_http2_keys_are_accepted_where_otelcol_speaks_http1_too_and_refused_where_it_would_ping():
    plain = OtlpHttpConfig(endpoint="http://collector:4318", http2_read_idle_timeout="10s",
                           http2_ping_timeout="5s", force_attempt_http2=False)
    assert any("http2_read_idle_timeout has no effect" in warning for warning in plain.config_warnings())
    assert not OtlpHttpConfig(endpoint="https://collector:4318", force_attempt_http2=True).config_warnings()
    with pytest.raises(ValidationError, match="speaks HTTP/1.1 only"):
        OtlpHttpConfig(endpoint="https://collector:4318", http2_read_idle_timeout="10s")


def test_an_https_proxy_is_verified_with_the_tls_blocks_ca(tmp_path):
    certs = make_certs(str(tmp_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    server = Upstream(free_port(), ssl_context=context).start()  # the proxy answers the absolute-form request
    try:  # the certificate names localhost, signed by a CA only the tls block knows
        config = OtlpHttpConfig(endpoint=f"http://localhost:{server.port}", proxy_url=f"https://localhost:{server.port}",
                                tls={"ca_file": certs.ca_file})
        asyncio.run(_send(config))
        assert len(server.received("traces")) == 1
    finally:
        server.stop()


@pytest.mark.parametrize("no_proxy, url, proxied", [
    ("10.0.0.0/8", "http://10.1.2.3:4318", False), ("10.0.0.0/8", "http://11.1.2.3:4318", True),
    ("fd00::/8", "http://[fd00::1]:4318", False), ("10.0.0.0/8, .svc", "http://collector.ns.svc:4318", False),
    ("10.0.0.0/8", "http://collector.test:4318", True)])
def test_no_proxy_takes_cidr_ranges_as_go_does(monkeypatch, no_proxy, url, proxied):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert (Proxies("").for_url(url) is not None) == proxied


@pytest.mark.parametrize("no_proxy, url, proxied", [
    ("collector.test:4318", "http://collector.test:4318/v1/traces", False),
    ("collector.test:4318", "http://collector.test:4319/v1/traces", True),
    ("collector.test:443", "https://collector.test/v1/traces", False),
    ("10.1.2.3:4318", "http://10.1.2.3:4318", False), ("[fd00::1]:4318", "http://[fd00::1]:4318", False),
    ("10.1.2.3:4318", "http://10.1.2.3:4317", True), ("*.ns.svc", "http://collector.ns.svc:4318", False)])
def test_a_no_proxy_entry_with_a_port_matches_that_host_and_port_only(monkeypatch, no_proxy, url, proxied):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert (Proxies("").for_url(url) is not None) == proxied


def test_a_no_proxy_host_and_port_sends_straight_to_it(upstream, proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", f"collector.test:{upstream.port + 1}")  # another port: still proxied
    asyncio.run(_send(OtlpHttpConfig(endpoint=f"http://collector.test:{upstream.port}")))
    assert len(proxy.requests) == 1 and len(upstream.received("traces")) == 1
    monkeypatch.setenv("NO_PROXY", f"collector.test:{upstream.port}")
    with pytest.raises(Exception, match="unreachable"):  # not proxied, and collector.test resolves nowhere
        asyncio.run(_send(OtlpHttpConfig(endpoint=f"http://collector.test:{upstream.port}", timeout="2s")))
    assert len(proxy.requests) == 1


@pytest.mark.parametrize("scheme", ["socks4", "socks4a", "ftp"])
def test_an_environment_proxy_of_an_unknown_scheme_gets_nothing_and_the_data_stays_queued(
        upstream, monkeypatch, caplog, scheme):
    """HTTPS_PROXY=socks4://... once made the exporter speak HTTP to a SOCKS4 server, which failed
    with an error about the answer, not the proxy. Now nothing reaches the proxy; the error names it
    (credentials masked) and the schemes there are, is logged once over the retries, and the chain
    keeps the data (ShutdownError at stop, nothing dead-lettered)."""
    received: list[bytes] = []
    connections: list[int] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        received.append(await reader.read(65536))
        writer.close()

    async def scenario() -> BaseException:
        listener = await asyncio.start_server(record, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        monkeypatch.setenv("HTTP_PROXY", f"{scheme}://edge:s3cret@127.0.0.1:{port}")
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=f"http://collector.test:{upstream.port}",
                                                               timeout="2s"))
        host = Host()
        retry = RetryConfig(initial_interval=0.01, max_interval=0.02, max_elapsed_time=0)
        chain = ExportChain(exporter, Signal.TRACES, host, timeout=5, retry=retry, link=Link(2, retry, lambda _: None))
        await exporter.start()
        try:
            export = asyncio.create_task(chain.export([(b"", 1)]))
            for _ in range(500):  # at most 5 s for a few attempts
                if sum("retrying" in record.getMessage() for record in caplog.records) >= 4:
                    break
                await asyncio.sleep(0.01)
            assert sum("retrying" in record.getMessage() for record in caplog.records) >= 4
            problem = host.problems["otlphttp"] or ""
            assert f"{scheme}://***@127.0.0.1:{port}" in problem and "s3cret" not in problem
            assert "http, https, socks5, socks5h" in problem
            chain.stop()
            return await asyncio.wait_for(asyncio.gather(export, return_exceptions=True), 5)
        finally:
            await exporter.shutdown()
            listener.close()

    with caplog.at_level("DEBUG", logger="edgeagent.exporters"):
        [outcome] = asyncio.run(scenario())
    assert isinstance(outcome, ShutdownError)  # kept for the next attempt, not dropped
    assert connections == [] and received == []  # not a byte, HTTP or other, to the proxy
    logged = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(logged) == 1, [record.getMessage() for record in caplog.records]
    assert "s3cret" not in str(getattr(logged[0], "error", ""))
    assert upstream.received("traces") == []


@pytest.mark.parametrize("proxy_url", ["http://edge:h1d/d3n@127.0.0.1:9", "http://edge:h1d#d3n@127.0.0.1:9",
                                       "socks4://edge:h1d?d3n@127.0.0.1:9", "edge:h1d/d3n@127.0.0.1:9",
                                       "http://edge:h1dd3n@[::1:9"])
def test_an_unreadable_environment_proxy_shows_no_part_of_its_password_in_errors_or_logs(monkeypatch, caplog,
                                                                                        proxy_url):
    # urlsplit ends the authority at an unencoded '/', '?' or '#': reading the port raised urllib's
    # bare ValueError, which quotes the password's start, and the URL was shown unmasked
    monkeypatch.setenv("HTTPS_PROXY", proxy_url)

    async def scenario() -> None:
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint="https://collector.test:4318", timeout="2s"))
        await exporter.start()
        try:
            assert exporter.upstream_addresses() == []  # nothing is ever connected to
            await exporter.send(Signal.TRACES, b"")
        finally:
            await exporter.shutdown()

    with caplog.at_level("DEBUG"), pytest.raises(RetryableError) as raised:
        asyncio.run(scenario())
    said = [str(raised.value), *(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)]
    assert not any("h1d" in text or "d3n" in text for text in said), said
    assert "***@127.0.0.1:9" in str(raised.value) or "***@[::1:9" in str(raised.value)


def test_an_unusable_environment_proxy_is_logged_once_at_start_and_sends_only_raise(monkeypatch, caplog):
    # log or raise, never both: each failed send raises; the log says it once, when the exporter starts
    monkeypatch.setenv("HTTPS_PROXY", "socks4://edge:s3cret@127.0.0.1:9")

    async def scenario() -> list[str]:
        exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint="https://collector.test:4318", timeout="2s"))
        await exporter.start()
        try:
            logged = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
            assert logged and "cannot be used" in logged[0], logged
            caplog.clear()
            errors = []
            for _ in range(3):
                with pytest.raises(RetryableError) as raised:
                    await exporter.send(Signal.TRACES, b"")
                errors.append(str(raised.value))
            return errors
        finally:
            await exporter.shutdown()

    with caplog.at_level("DEBUG"):
        errors = asyncio.run(scenario())
    assert all("socks4://***@127.0.0.1:9" in error for error in errors)
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
