"""configtls's inline PEM, system CA pool and cipher suite keys (otelcol's names), with real
handshakes on loopback."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgeagent import tls
from tests.test_tls import _exchange, _tls_echo_server


def _pem(path: str) -> str:
    return Path(path).read_text()


async def _negotiated(port: int, context: ssl.SSLContext) -> tuple[str, str] | None:
    """The (cipher, version) a client with `context` negotiates, or None when the handshake fails."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), 5)
    except (ssl.SSLError, ConnectionError):
        return None
    cipher = writer.get_extra_info("cipher")
    writer.close()
    return cipher[0], cipher[1]


def test_a_server_and_a_client_configured_with_inline_pem_talk(certs):
    server = tls.TlsServerConfig(cert_pem=_pem(certs.server_cert), key_pem=_pem(certs.server_key),
                                 client_ca_file=certs.ca_file)
    client = tls.TlsClientConfig(ca_pem=_pem(certs.ca_file), cert_pem=_pem(certs.client_cert),
                                 key_file=certs.client_key)

    async def scenario() -> None:
        listener, port = await _tls_echo_server(tls.server_ssl_context(server))
        async with listener:
            assert await _exchange(port, tls.client_ssl_context(client)) == b"ping"

    asyncio.run(scenario())


def test_include_system_ca_certs_pool_adds_the_system_roots_to_ca_file(certs):
    alone = tls.client_ssl_context(tls.TlsClientConfig(ca_file=certs.ca_file))
    with_system = tls.client_ssl_context(tls.TlsClientConfig(ca_file=certs.ca_file, include_system_ca_certs_pool=True))
    assert alone.cert_store_stats()["x509_ca"] == 1
    assert with_system.cert_store_stats()["x509_ca"] > 1
    server = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key, client_ca_file=certs.ca_file,
                                 include_system_ca_certs_pool=True)
    assert tls.server_ssl_context(server).cert_store_stats()["x509_ca"] > 1  # the client CAs, as in otelcol
    assert not server.config_warnings()


def test_cipher_suites_limit_what_tls12_negotiates(certs):
    suite = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"  # the test certificates have EC keys
    server = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key, cipher_suites=[suite])

    async def scenario() -> None:
        listener, port = await _tls_echo_server(tls.server_ssl_context(server))
        async with listener:
            twelve = tls.TlsClientConfig(ca_file=certs.ca_file, max_version="1.2")
            assert await _negotiated(port, tls.client_ssl_context(twelve)) == ("ECDHE-ECDSA-AES256-GCM-SHA384",
                                                                                 "TLSv1.2")
            other = tls.TlsClientConfig(ca_file=certs.ca_file, max_version="1.2",
                                        cipher_suites=["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"])
            assert await _negotiated(port, tls.client_ssl_context(other)) is None
            thirteen = await _negotiated(port, tls.client_ssl_context(tls.TlsClientConfig(ca_file=certs.ca_file)))
            assert thirteen is not None and thirteen[1] == "TLSv1.3"  # TLS 1.3 suites are not configurable, as Go

    asyncio.run(scenario())


def test_tls13_suite_names_alone_leave_only_tls13(certs):
    client = tls.TlsClientConfig(ca_file=certs.ca_file, cipher_suites=["TLS_AES_128_GCM_SHA256"])
    assert tls.client_ssl_context(client).minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize("keys, message", [
    ({"ca_file": "ca.crt", "ca_pem": "-----BEGIN"}, "ca_file and ca_pem both set"),
    ({"cert_file": "a.crt", "cert_pem": "x", "key_file": "a.key"}, "cert_file and cert_pem both set"),
    ({"cert_pem": "x"}, "key_file is missing \\(or key_pem\\)"),
    ({"curve_preferences": ["X25519"]}, "curve_preferences is not supported"),
    ({"tpm": {"enabled": True, "path": "/dev/tpmrm0"}}, "tpm is not supported"),
    ({"cipher_suites": ["TLS_RSA_WITH_AES_128_GCM_SHA256"]}, "include_insecure_cipher_suites"),
    ({"cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"], "include_insecure_cipher_suites": True}, "RC4 or 3DES"),
    ({"cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256"]}, "invalid TLS cipher suite"),
])
def test_tls_keys_edgeagent_cannot_honour_are_refused_with_the_reason(keys, message):
    with pytest.raises(ValidationError, match=message):
        tls.TlsClientConfig(**keys)


def test_insecure_suites_are_used_when_allowed(certs):
    client = tls.TlsClientConfig(ca_file=certs.ca_file, include_insecure_cipher_suites=True,
                                 cipher_suites=["TLS_RSA_WITH_AES_128_GCM_SHA256"])
    names = {cipher["name"] for cipher in tls.client_ssl_context(client).get_ciphers()}
    assert "AES128-GCM-SHA256" in names and "ECDHE-RSA-AES128-GCM-SHA256" not in names
