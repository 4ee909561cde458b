"""otlphttp's tls and auth: a real HTTPS upstream on loopback, the warnings, and no password in what it shows."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from edgeagent.errors import RetryableError
from edgeagent.exporters.otlphttp import OtlpHttpConfig, OtlpHttpExporter
from edgeagent.extensions.bearertokenauth import BearerTokenAuth, BearerTokenAuthConfig
from edgeagent.signals import Signal
from tests.helpers.net import free_port
from tests.helpers.upstream import Upstream


class Host:
    def __init__(self, **extensions):
        self.extensions = extensions


def test_sends_over_tls_with_server_name_override_and_the_token_header(certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    upstream = Upstream(free_port(), ssl_context=context).start()
    try:
        auth = BearerTokenAuth(
            "bearertokenauth", BearerTokenAuthConfig(token="up-token", header="X-Api-Key", scheme="")
        )
        config = OtlpHttpConfig(endpoint=upstream.url, compression="none", auth={"authenticator": "bearertokenauth"},
                                tls={"ca_file": certs.ca_file, "server_name_override": "localhost"})

        async def scenario() -> None:
            await auth.start()
            exporter = OtlpHttpExporter("otlphttp", config, Host(bearertokenauth=auth))
            await exporter.start()
            try:
                await exporter.send(Signal.TRACES, b"")
            finally:
                await exporter.shutdown()

        asyncio.run(scenario())
        [received] = upstream.received("traces")
        assert received.headers["X-Api-Key"] == "up-token"

        # the override is the name verified: one the certificate does not carry fails
        config.tls.server_name_override = "collector.example"
        with pytest.raises(RetryableError, match="certificate"):
            asyncio.run(scenario())
    finally:
        upstream.stop()


def test_tls_settings_without_effect_are_warnings():
    insecure = OtlpHttpConfig(endpoint="https://collector:4318", tls={"insecure": True})
    plain = OtlpHttpConfig(endpoint="http://collector:4318", tls={"ca_file": "/etc/ca.crt"})
    assert "scheme decides" in " ".join(insecure.config_warnings())
    assert "https://" in " ".join(plain.config_warnings())
    assert OtlpHttpConfig(endpoint="https://collector:4318", tls={"ca_file": "/etc/ca.crt"}).config_warnings() == []


def test_status_and_health_never_show_a_password_in_the_endpoint():
    exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint="https://edge:s3cr3t@collector:4318"))
    assert exporter.describe() == "https://edge:***@collector:4318"


def test_https_without_a_tls_block_is_verified_against_the_system_roots(certs, monkeypatch):
    """aiohttp's own default context holds no roots when imported leanly; the exporter brings its own."""
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca_file)  # the system roots, as OpenSSL reads them
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    upstream = Upstream(free_port(), ssl_context=context).start()
    try:
        for tls in (None, {"insecure": True}):  # `insecure` does not turn verification off over HTTP
            exporter = OtlpHttpExporter("otlphttp", OtlpHttpConfig(endpoint=upstream.url, compression="none",
                                                                   tls=tls))

            async def scenario(exporter: OtlpHttpExporter = exporter) -> None:
                await exporter.start()
                try:
                    await exporter.send(Signal.TRACES, b"")
                finally:
                    await exporter.shutdown()

            asyncio.run(scenario())
        assert len(upstream.received("traces")) == 2
    finally:
        upstream.stop()


def test_insecure_beside_a_ca_keeps_the_tls_block_as_otelcol_loads_it(certs):
    """configtls's LoadTLSConfig drops the block for `insecure` only when it names no CA: with one, the
    https:// endpoint is verified against it (and the client certificate presented). Verified against
    the system roots instead, a private upstream was never reached and nothing was delivered."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the client certificate must come too
    context.load_verify_locations(certs.ca_file)
    upstream = Upstream(free_port(), ssl_context=context).start()
    try:
        config = OtlpHttpConfig(endpoint=upstream.url, compression="none",
                                tls={"insecure": True, "ca_file": certs.ca_file, "cert_file": certs.client_cert,
                                     "key_file": certs.client_key})

        async def scenario() -> None:
            exporter = OtlpHttpExporter("otlphttp", config)
            await exporter.start()
            try:
                await exporter.send(Signal.TRACES, b"")
            finally:
                await exporter.shutdown()

        asyncio.run(scenario())
        assert len(upstream.received("traces")) == 1
        assert "the rest of the tls block is used" in " ".join(config.config_warnings())
    finally:
        upstream.stop()
