"""edgeagent.tls with real handshakes on loopback: contexts, gRPC over TLS, mTLS and certificate reload."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from pydantic import ValidationError

from edgeagent import tls
from edgeagent.exporters.grpc_client import Channel
from edgeagent.exporters.grpc_connection import ChannelSettings, GrpcStatusError
from edgeagent.grpc_status import StatusCode
from edgeagent.receivers import grpc_call, grpc_server
from tests.helpers.certs import Authority, replace

METHOD = "/edgeagent.test.Echo/Echo"


async def _tls_echo_server(context: ssl.SSLContext):
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readexactly(4))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def _exchange(port: int, context: ssl.SSLContext | None) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), 5)
    try:
        writer.write(b"ping")
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(4), 5)
    finally:
        writer.close()


def _client(ca_file: str, cert: str | None = None, key: str | None = None, **keys) -> tls.TlsClientConfig:
    return tls.TlsClientConfig(ca_file=ca_file, cert_file=cert, key_file=key, **keys)


def test_client_verifies_the_server_against_ca_file(certs, tmp_path):
    server = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)
    stranger = Authority(str(tmp_path), "another CA")

    async def scenario() -> None:
        listener, port = await _tls_echo_server(tls.server_ssl_context(server))
        async with listener:
            assert await _exchange(port, tls.client_ssl_context(_client(certs.ca_file))) == b"ping"
            with pytest.raises(ssl.SSLCertVerificationError):
                await _exchange(port, tls.client_ssl_context(_client(stranger.ca_file)))
            skip = tls.client_ssl_context(_client(stranger.ca_file, insecure_skip_verify=True))
            assert await _exchange(port, skip) == b"ping"

    asyncio.run(scenario())


def test_client_ca_file_refuses_clients_without_a_certificate(certs):
    server = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key,
                                 client_ca_file=certs.ca_file)

    async def scenario() -> None:
        listener, port = await _tls_echo_server(tls.server_ssl_context(server))
        async with listener:
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await _exchange(port, tls.client_ssl_context(_client(certs.ca_file)))
            with_cert = tls.client_ssl_context(_client(certs.ca_file, certs.client_cert, certs.client_key))
            assert await _exchange(port, with_cert) == b"ping"

    asyncio.run(scenario())


def test_server_serves_a_replaced_certificate_without_restart(certs, tmp_path):
    server = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)
    rotated = Authority(str(tmp_path), "rotated CA")
    new_cert, new_key = rotated.issue("server-rotated")
    trusts_only_new = tls.client_ssl_context(_client(rotated.ca_file))

    async def scenario() -> None:
        listener, port = await _tls_echo_server(tls.server_ssl_context(server))
        async with listener:
            with pytest.raises(ssl.SSLCertVerificationError):
                await _exchange(port, trusts_only_new)
            replace(new_key, certs.server_key)
            replace(new_cert, certs.server_cert)
            assert await _exchange(port, trusts_only_new) == b"ping"

    asyncio.run(scenario())


def test_half_rotated_pair_keeps_the_previous_certificate(certs, tmp_path):
    server = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)
    new_cert, _ = Authority(str(tmp_path), "rotated CA").issue("server-rotated")
    trusts_old = tls.client_ssl_context(_client(certs.ca_file))

    async def scenario() -> None:
        listener, port = await _tls_echo_server(tls.server_ssl_context(server))
        async with listener:
            replace(new_cert, certs.server_cert)  # the key does not match yet
            assert await _exchange(port, trusts_old) == b"ping"

    asyncio.run(scenario())


def test_client_ca_is_reloaded_only_with_client_ca_file_reload(certs, tmp_path):
    other = Authority(str(tmp_path), "other client CA")
    other_cert, other_key = other.issue("other-client", server=False)
    client_ca = str(tmp_path / "clients.crt")
    replace(certs.ca_file, client_ca)

    async def accepted(reload: bool) -> bool:
        replace(certs.ca_file, client_ca)
        server = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key,
                                     client_ca_file=client_ca, client_ca_file_reload=reload)
        listener, port = await _tls_echo_server(tls.server_ssl_context(server))
        async with listener:
            replace(other.ca_file, client_ca)
            try:
                return await _exchange(port, tls.client_ssl_context(_client(certs.ca_file, other_cert, other_key))) \
                    == b"ping"
            except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
                return False

    assert asyncio.run(accepted(reload=True))
    assert not asyncio.run(accepted(reload=False))


def test_reloading_client_context_follows_a_replaced_ca_file(certs, tmp_path):
    ca_file = str(tmp_path / "trusted.crt")
    replace(certs.ca_file, ca_file)
    reloading = tls.reloading_client_context(_client(ca_file))
    first = reloading.get()
    assert reloading.get() is first
    replace(Authority(str(tmp_path), "new CA").ca_file, ca_file)
    assert reloading.get() is not first


# ---- gRPC (the agent's own client and server, on h2) ---------------------------------------------

async def _grpc_server(server_cfg: tls.TlsServerConfig):
    async def echo(call: grpc_call.GrpcCall) -> bytes:
        return await call.read()

    server = grpc_server.GrpcServer({METHOD: echo}, grpc_call.Limits(max_message_bytes=1 << 20),
                                    tls.server_ssl_context(server_cfg, alpn=["h2"]))
    return server, await server.start("127.0.0.1", 0)


async def _grpc_call(port: int, cfg: tls.TlsClientConfig) -> bytes:
    context = tls.client_ssl_context(cfg, alpn=["h2"])
    channel = Channel(ChannelSettings("127.0.0.1", port, ssl_context=context,
                                      server_hostname=cfg.server_name_override))
    try:
        return await channel.unary(METHOD, b"ping", timeout=5)
    finally:
        await channel.close()


def test_grpc_mtls_refuses_a_client_without_certificate(certs):
    server_cfg = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key,
                                     client_ca_file=certs.ca_file)

    async def scenario() -> None:
        server, port = await _grpc_server(server_cfg)
        try:
            with pytest.raises(GrpcStatusError) as refused:
                await _grpc_call(port, _client(certs.ca_file))
            assert refused.value.code == StatusCode.UNAVAILABLE
            assert await _grpc_call(port, _client(certs.ca_file, certs.client_cert, certs.client_key)) == b"ping"
        finally:
            await server.stop(1)

    asyncio.run(scenario())


def test_grpc_server_serves_a_replaced_certificate_without_restart(certs, tmp_path):
    server_cfg = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)
    rotated = Authority(str(tmp_path), "rotated CA")
    new_cert, new_key = rotated.issue("server-rotated")

    async def scenario() -> None:
        server, port = await _grpc_server(server_cfg)
        try:
            assert await _grpc_call(port, _client(certs.ca_file)) == b"ping"
            replace(new_key, certs.server_key)
            replace(new_cert, certs.server_cert)
            assert await _grpc_call(port, _client(rotated.ca_file)) == b"ping"
        finally:
            await server.stop(1)

    asyncio.run(scenario())


def test_server_name_override_sets_the_name_the_certificate_must_carry(certs):
    server_cfg = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)

    async def scenario() -> None:
        server, port = await _grpc_server(server_cfg)
        try:
            assert await _grpc_call(port, _client(certs.ca_file, server_name_override="localhost")) == b"ping"
            with pytest.raises(GrpcStatusError) as refused:
                await _grpc_call(port, _client(certs.ca_file, server_name_override="collector.example"))
            assert refused.value.code == StatusCode.UNAVAILABLE and "collector.example" in refused.value.message
        finally:
            await server.stop(1)

    asyncio.run(scenario())


def test_grpc_client_skips_verification_and_caps_the_version_when_told(certs, tmp_path):
    server_cfg = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)
    stranger = Authority(str(tmp_path), "another CA")

    async def scenario() -> None:
        server, port = await _grpc_server(server_cfg)
        try:
            with pytest.raises(GrpcStatusError):
                await _grpc_call(port, _client(stranger.ca_file))
            assert await _grpc_call(port, _client(stranger.ca_file, insecure_skip_verify=True)) == b"ping"
            assert await _grpc_call(port, _client(certs.ca_file, max_version="1.2")) == b"ping"
        finally:
            await server.stop(1)

    asyncio.run(scenario())


def test_insecure_client_gets_no_context():
    assert tls.client_ssl_context(tls.TlsClientConfig(insecure=True), alpn=["h2"]) is None
    assert tls.client_ssl_context(tls.TlsClientConfig(insecure=True)) is None


def test_insecure_beside_a_ca_gets_the_context_as_configtls_loads_it(certs):
    """configtls's LoadTLSConfig returns no config for `insecure` only when no CA is given."""
    for keys in ({"ca_file": certs.ca_file}, {"ca_pem": open(certs.ca_file).read()}):
        context = tls.client_ssl_context(tls.TlsClientConfig(insecure=True, **keys))
        assert context is not None and context.verify_mode == ssl.CERT_REQUIRED


# ---- validation (pure: no file is read) ------------------------------------------------------------

@pytest.mark.parametrize("keys,words", [
    ({"cert_file": "/nonexistent/c.crt"}, ["key_file is missing"]),
    ({"key_file": "/nonexistent/c.key"}, ["cert_file is missing"]),
    ({"min_version": "1.4"}, ["min_version", "1.3"]),
    ({"min_version": "1.3", "max_version": "1.2"}, ["above max_version"]),
])
def test_client_config_mistakes_are_named(keys, words):
    with pytest.raises(ValidationError) as error:
        tls.TlsClientConfig(**keys)
    assert all(word in str(error.value) for word in words), str(error.value)


@pytest.mark.parametrize("keys,words", [
    ({}, ["cert_file and key_file are required"]),
    ({"cert_file": "/nonexistent/s.crt"}, ["key_file is missing"]),
    ({"cert_file": "/n/s.crt", "key_file": "/n/s.key", "client_ca_file_reload": True}, ["needs client_ca_file"]),
    ({"cert_file": "/n/s.crt", "key_file": "/n/s.key", "verify_client": True}, ["verify_client"]),
    ({"cert_file": "/n/s.crt", "key_file": "/n/s.key", "client_auth_type": "RequireAndVerifyClientCert"},
     ["client_auth_type", "needs client_ca_file"]),
    ({"cert_file": "/n/s.crt", "key_file": "/n/s.key", "client_ca_file": "/n/ca.crt",
      "client_auth_type": "VerifyClientCertIfGiven"}, ["client_auth_type", "RequireAndVerifyClientCert"]),
])
def test_server_config_mistakes_are_named(keys, words):
    with pytest.raises(ValidationError) as error:
        tls.TlsServerConfig(**keys)
    assert all(word in str(error.value) for word in words), str(error.value)


@pytest.mark.parametrize("keys,words", [
    ({"insecure": True, "cert_file": "/n/c.crt", "key_file": "/n/c.key"}, ["cert_file", "no effect"]),
    ({"insecure": True, "insecure_skip_verify": True}, ["insecure_skip_verify", "no effect"]),
])
def test_grpc_client_refuses_tls_keys_that_insecure_would_ignore(keys, words):
    with pytest.raises(ValueError) as error:
        tls.check_grpc_client(tls.TlsClientConfig(**keys))
    assert all(word in str(error.value) for word in words), str(error.value)


@pytest.mark.parametrize("keys", [{"insecure_skip_verify": True}, {"max_version": "1.2"}, {"min_version": "1.3"},
                                  {"insecure": True, "ca_file": "/n/ca.crt", "insecure_skip_verify": True}])
def test_grpc_client_accepts_what_its_tls_honours(keys):
    assert tls.check_grpc_client(tls.TlsClientConfig(**keys)) is not None


def test_server_ca_file_is_a_warning_not_silently_ignored():
    cfg = tls.TlsServerConfig(cert_file="/n/s.crt", key_file="/n/s.key", ca_file="/n/ca.crt")
    assert any("client_ca_file" in warning for warning in cfg.config_warnings())


def test_client_auth_type_of_other_servers_configs_is_accepted_where_it_says_what_client_ca_file_does(certs):
    """`client_auth_type: RequireAndVerifyClientCert` (Go's name, as Prometheus' web config spells it) is
    not an otelcol key; it is what client_ca_file does, so it is accepted with a warning."""
    cfg = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key,
                              client_ca_file=certs.ca_file, client_auth_type="RequireAndVerifyClientCert")
    assert any("client_auth_type" in warning for warning in cfg.config_warnings())
    assert tls.server_ssl_context(cfg).verify_mode == ssl.CERT_REQUIRED


def test_unreadable_certificate_names_the_file(tmp_path):
    missing = str(tmp_path / "absent.crt")
    with pytest.raises(ValueError, match="absent.crt"):
        tls.server_ssl_context(tls.TlsServerConfig(cert_file=missing, key_file=missing))
