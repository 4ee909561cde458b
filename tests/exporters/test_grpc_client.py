"""The `otlp` exporter's gRPC client against real servers on loopback: the agent's own gRPC server
(`receivers/grpc_server.py`) and `tests.helpers.h2_peer`, which misbehaves on purpose.

What a failure must become is what the sender acts on: RetryableError (try again), or
PermanentError (dead-letter); nothing may hang past the call's timeout or crash the sender.
"""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from edgeagent import tls
from edgeagent.configretry import RetryConfig
from edgeagent.errors import PermanentError, RetryableError
from edgeagent.exporters.chain import Delivery, ExportChain
from edgeagent.exporters.grpc_client import Channel, _Subchannel
from edgeagent.exporters.grpc_connection import ChannelSettings, Connection, GrpcStatusError
from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from edgeagent.extensions.bearertokenauth import BearerTokenAuth, BearerTokenAuthConfig
from edgeagent.grpc_status import StatusCode
from edgeagent.receivers import grpc_call, grpc_server
from edgeagent.signals import Signal
from tests.exporters.test_chain import Host
from tests.exporters.test_otlphttp_broken_answers import _DeadLetters
from tests.helpers.certs import Authority, replace
from tests.helpers.grpc_upstream import Answer, GrpcUpstream
from tests.helpers.h2_peer import H2Peer
from tests.helpers.net import free_port, link_local

TRACES = f"/{Signal.TRACES.grpc_service}/Export"


def _request(spans: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        scope.spans.add(name=f"checkout-{index % 7}", span_id=index.to_bytes(8, "big"), trace_id=bytes(16))
    return request.SerializeToString()


def _exporter(port: int, **settings) -> OtlpGrpcExporter:
    config = OtlpGrpcConfig.model_validate({"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}, **settings})
    return OtlpGrpcExporter("otlp", config)


class Recorder:
    """Our own gRPC server, recording each call's encoding, metadata and message."""

    def __init__(self, limits: grpc_call.Limits | None = None, delay: float = 0.0):
        self.calls: list[tuple[str, dict[str, str | bytes], bytes]] = []
        self.wire: list[int] = []
        self.active = self.most_active = 0
        self.delay = delay
        self.server = grpc_server.GrpcServer({TRACES: self._export},
                                             limits or grpc_call.Limits(max_message_bytes=64 << 20))

    async def _export(self, call: grpc_call.GrpcCall) -> bytes:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            sizes: list[int] = []
            message = await call.read(sizes.append)
            self.wire.append(sizes[0] if sizes else 0)
            await asyncio.sleep(self.delay)
            self.calls.append((call.encoding, dict(call.metadata), message))
            return b""
        finally:
            self.active -= 1

    async def __aenter__(self) -> Recorder:
        self.port = await self.server.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(1)


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd", "snappy"])
def test_each_grpc_encoding_otelcol_accepts_is_sent_as_configured(compression):
    body = _request(512)

    async def scenario() -> None:
        async with Recorder() as server:
            exporter = _exporter(server.port, compression=compression, headers={"X-Tenant": "acme"})
            await exporter.start()
            try:
                await exporter.send(Signal.TRACES, body)
            finally:
                await exporter.shutdown()
        ((encoding, metadata, message),) = server.calls
        assert message == body
        assert encoding == ("identity" if compression == "none" else compression)
        assert metadata["x-tenant"] == "acme"
        if compression != "none":
            assert server.wire[0] < len(body) / 2, (server.wire, len(body))

    asyncio.run(scenario())


def test_calls_share_one_connection_and_respect_max_concurrent_streams():
    async def scenario() -> None:
        limits = grpc_call.Limits(max_message_bytes=1 << 20, max_concurrent_streams=3)
        async with Recorder(limits, delay=0.05) as server:
            channel = Channel(ChannelSettings("127.0.0.1", server.port))
            try:
                await asyncio.gather(*(channel.unary(TRACES, _request(3), timeout=10) for _ in range(30)))
            finally:
                await channel.close()
        assert len(server.calls) == 30
        assert server.most_active == 3  # streams were multiplexed, never more than the server allows

    asyncio.run(scenario())


def test_calls_a_goaway_names_unprocessed_go_out_again_on_a_new_connection():
    """As grpc-go's transparent retry: not a failure of the call, nothing for the caller to retry."""
    async def scenario() -> None:
        async with H2Peer("goaway", calls=3) as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port))
            try:
                results = await asyncio.gather(*(channel.unary(TRACES, b"", timeout=5) for _ in range(3)))
                assert results == [b""] * 3  # the first answered on the closing connection, the others on a new one
                assert peer.connections == 2 and peer.requests == 5
                assert await channel.unary(TRACES, b"", timeout=5) == b""
                assert peer.connections == 2
            finally:
                await channel.close()

    asyncio.run(scenario())


def test_a_call_a_goaway_names_unprocessed_twice_ends_unavailable():
    """The call goes out again once; a second connection that does not take it either fails it."""
    async def scenario() -> None:
        async with H2Peer("goaway_always", calls=1) as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port))
            try:
                with pytest.raises(GrpcStatusError) as failed:
                    await channel.unary(TRACES, b"", timeout=5)
                assert failed.value.code == StatusCode.UNAVAILABLE and "not processed" in failed.value.message
                assert peer.connections == 2
            finally:
                await channel.close()

    asyncio.run(scenario())


def test_a_call_refused_with_refused_stream_goes_out_again():
    """REFUSED_STREAM says the server did not take the call, as a GOAWAY above it does (grpc-go)."""
    async def scenario() -> None:
        async with H2Peer("refuse_first") as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port))
            try:
                assert await channel.unary(TRACES, b"", timeout=5) == b""
                assert peer.requests == 2
            finally:
                await channel.close()

    asyncio.run(scenario())


def test_a_graceful_goaway_read_with_the_answer_and_a_ping_fails_no_call():
    """grpc-go's drain: GOAWAY naming every stream and a PING, written right after an answer. The
    answer is the call's, the PING is acknowledged (the server waits for it to say its last
    GOAWAY), and the next call takes a new connection."""
    async def scenario() -> None:
        async with H2Peer("drain") as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port))
            try:
                assert await channel.unary(TRACES, b"", timeout=5) == b""
                await asyncio.sleep(0.1)
                assert peer.ping_acks == 1
                assert await channel.unary(TRACES, b"", timeout=5) == b""
                assert peer.connections == 2
            finally:
                await channel.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", ["silent", "silent_after_preface"])
def test_keepalive_finds_a_silent_peer_within_time_plus_timeout(mode):
    async def scenario() -> None:
        async with H2Peer(mode) as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port, keepalive_time=0.5, keepalive_timeout=0.5))
            started = time.monotonic()
            try:
                with pytest.raises(GrpcStatusError) as failed:
                    await channel.unary(TRACES, b"", timeout=30)
            finally:
                await channel.close()
            elapsed = time.monotonic() - started
            assert failed.value.code == StatusCode.UNAVAILABLE and "keepalive" in failed.value.message
            assert 0.9 < elapsed < 3, elapsed

    asyncio.run(scenario())


def test_an_idle_connection_sleeps_until_a_call_and_then_pings_at_once(monkeypatch):
    async def scenario() -> None:
        wakeups = 0
        keepalive = Connection._keepalive

        def counted(self: Connection) -> None:
            nonlocal wakeups
            wakeups += 1
            keepalive(self)

        monkeypatch.setattr(Connection, "_keepalive", counted)
        async with H2Peer("silent_after_preface") as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port, keepalive_time=0.2, keepalive_timeout=0.5))
            try:
                await channel._pick()  # connected, no call: no pings (keepalive_without_calls is off)
                await asyncio.sleep(1.0)
                assert wakeups <= 3, f"{wakeups} keepalive wake-ups in 1 s without a call"
                started = time.monotonic()
                with pytest.raises(GrpcStatusError) as failed:
                    await channel.unary(TRACES, b"", timeout=30)
                assert "keepalive" in failed.value.message
                assert time.monotonic() - started < 0.65  # pinged as the call started, dropped 0.5 s later
            finally:
                await channel.close()

    asyncio.run(scenario())


def test_without_keepalive_a_silent_peer_costs_the_call_its_timeout_only():
    async def scenario() -> None:
        async with H2Peer("silent_after_preface") as peer:
            exporter = _exporter(peer.port, timeout="1s")
            await exporter.start()
            started = time.monotonic()
            try:
                with pytest.raises(RetryableError, match="DEADLINE_EXCEEDED"):
                    await exporter.send(Signal.TRACES, _request(5))
            finally:
                await exporter.shutdown()
            assert time.monotonic() - started < 2

    asyncio.run(scenario())


def test_a_connection_silent_since_a_call_gave_up_is_closed_and_the_next_call_reconnects():
    async def scenario() -> None:
        async with H2Peer("silent_after_preface") as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port))  # no keepalive
            try:
                with pytest.raises(GrpcStatusError) as failed:
                    await channel.unary(TRACES, b"", timeout=0.5)
                assert failed.value.code == StatusCode.DEADLINE_EXCEEDED
                connection = channel._subchannels[0].connection
                assert connection is not None
                gave_up = time.monotonic()
                for _ in range(60):  # its PING is given as long as the call waited, at least 1 s
                    if connection.closed:
                        break
                    await asyncio.sleep(0.05)
                assert connection.closed, "the connection silent after the deadline was kept"
                assert 0.9 < time.monotonic() - gave_up < 2
                with pytest.raises(GrpcStatusError):
                    await channel.unary(TRACES, b"", timeout=0.2)
                assert peer.connections == 2
            finally:
                await channel.close()

    asyncio.run(scenario())


def test_a_slow_server_answering_pings_keeps_its_connection_after_a_deadline():
    async def scenario() -> None:
        async with Recorder(delay=1.0) as server:
            channel = Channel(ChannelSettings("127.0.0.1", server.port))
            try:
                with pytest.raises(GrpcStatusError) as failed:
                    await channel.unary(TRACES, _request(3), timeout=0.3)
                assert failed.value.code == StatusCode.DEADLINE_EXCEEDED
                connection = channel._subchannels[0].connection
                await asyncio.sleep(1.5)  # past the PING's bound: its ACK came
                assert connection is not None and not connection.closed
                await channel.unary(TRACES, _request(3), timeout=5)
                assert channel._subchannels[0].connection is connection
            finally:
                await channel.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("mode,error,words", [
    ("http1", RetryableError, ["UNAVAILABLE", "HTTP/2", "HTTP/1.1 400"]),
    ("garbage", RetryableError, ["UNAVAILABLE", "HTTP/2"]),
    ("http_503", RetryableError, ["UNAVAILABLE", "503"]),
    ("huge", PermanentError, ["RESOURCE_EXHAUSTED", "larger than max"]),
    ("trailers_only", PermanentError, ["INVALID_ARGUMENT", "bad span \u2713 100%"]),
])
def test_a_hostile_upstream_gives_a_clear_error_the_sender_can_act_on(mode, error, words):
    async def scenario() -> None:
        async with H2Peer(mode) as peer:
            exporter = _exporter(peer.port, timeout="5s")
            await exporter.start()
            try:
                for _ in range(2):  # and the exporter stays usable after it
                    with pytest.raises(error) as raised:
                        await exporter.send(Signal.TRACES, _request(5))
                    assert all(word in str(raised.value) for word in words), str(raised.value)
            finally:
                await exporter.shutdown()

    asyncio.run(scenario())


def test_a_proxys_http_413_is_split_as_otlphttp_splits_it():
    """A gRPC upstream behind a proxy with a body limit (nginx's client_max_body_size, 1 MiB unless
    set) answers a larger message HTTP 413 with no gRPC status: grpc-go reads UNKNOWN, which otelcol
    drops. The request was dead-lettered whole; its halves get through, as over otlphttp."""
    body = _request(64)
    sink = _DeadLetters()

    async def scenario() -> None:
        async with H2Peer("http_413", size=len(body) // 3) as peer:
            exporter = _exporter(peer.port, timeout="5s", compression="none")
            chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=5)
            await exporter.start()
            try:
                delivery = await asyncio.wait_for(chain.export([(body, 64)], sink), 20)
            finally:
                await exporter.shutdown()
            assert delivery.sent == 64 and not sink.kept
            assert peer.received and max(peer.received) <= len(body) // 3

    asyncio.run(scenario())


SIZE_REFUSALS = {
    # a backend's answer to a decoded message over its limit, with a retryable code
    "out of range": (grpc.StatusCode.OUT_OF_RANGE, None, "Error, decoded message length too large: found "
                                                         "3000000 bytes, the limit is: 1048576 bytes"),
    "throttle naming the size": (grpc.StatusCode.RESOURCE_EXHAUSTED, 1.0,
                                 "grpc: received message after decompression larger than max (3000000 vs. 1048576)"),
}


@pytest.mark.parametrize("code, retry_delay, message", SIZE_REFUSALS.values(), ids=SIZE_REFUSALS.keys())
def test_a_retryable_code_saying_the_message_is_over_a_size_limit_is_split_not_retried(code, retry_delay, message):
    """Retried, the same bytes were refused again until the retries ran out, and again after every
    lease: never delivered. Their halves are."""
    upstream = GrpcUpstream(free_port()).start()
    upstream.script(Answer(code, retry_delay, message=message))
    sink = _DeadLetters()

    async def scenario() -> Delivery:
        exporter = _exporter(upstream.port, timeout="5s")
        chain = ExportChain(exporter, Signal.TRACES, Host(), timeout=5,
                            retry=RetryConfig(initial_interval=30, max_interval=30, max_elapsed_time=60))
        await exporter.start()
        try:
            return await asyncio.wait_for(chain.export([(_request(64), 64)], sink), 10)
        finally:
            await exporter.shutdown()

    try:
        delivery = asyncio.run(scenario())
    finally:
        upstream.stop()
    assert delivery.sent == 64 and not sink.kept
    assert [call.items for call in upstream.calls] == [64, 32, 32]


@pytest.mark.e2e  # takes seconds: waits for a late server
def test_a_refused_connection_fails_fast_and_wait_for_ready_waits_for_the_server():
    port = _unused_port()

    async def scenario() -> None:
        exporter = _exporter(port, timeout="10s")
        await exporter.start()
        started = time.monotonic()
        with pytest.raises(RetryableError, match="UNAVAILABLE") as refused:
            await exporter.send(Signal.TRACES, _request(1))
        assert refused.value.connection and time.monotonic() - started < 1
        await exporter.shutdown()

        waiting = _exporter(port, timeout="10s", wait_for_ready=True)
        await waiting.start()
        server = Recorder()
        try:
            call = asyncio.ensure_future(waiting.send(Signal.TRACES, _request(1)))
            await asyncio.sleep(1.5)
            assert not call.done()
            await server.server.start("127.0.0.1", port)
            await asyncio.wait_for(call, 10)
            assert len(server.calls) == 1
        finally:
            await waiting.shutdown()
            await server.server.stop(1)

    asyncio.run(scenario())


def _unused_port() -> int:
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_tls_exporter_verifies_the_receiver_and_presents_its_certificate(certs):
    server_tls = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key,
                                     client_ca_file=certs.ca_file)
    body = _request(20)

    async def scenario() -> None:
        recorder = Recorder()
        recorder.server.ssl_context = tls.server_ssl_context(server_tls, alpn=["h2"])
        async with recorder as server:
            good = OtlpGrpcConfig.model_validate({"endpoint": f"127.0.0.1:{server.port}", "compression": "zstd",
                                                  "tls": {"ca_file": certs.ca_file, "cert_file": certs.client_cert,
                                                          "key_file": certs.client_key}})
            without_cert = good.model_copy(update={"tls": tls.TlsClientConfig(ca_file=certs.ca_file)})
            for config, expected in ((good, None), (without_cert, RetryableError)):
                exporter = OtlpGrpcExporter("otlp", config)
                await exporter.start()
                try:
                    if expected is None:
                        await exporter.send(Signal.TRACES, body)
                    else:
                        with pytest.raises(expected, match="UNAVAILABLE"):
                            await exporter.send(Signal.TRACES, body)
                finally:
                    await exporter.shutdown()
        assert [message for _, _, message in server.calls] == [body]

    asyncio.run(scenario())


def test_insecure_beside_a_ca_dials_tls_as_otelcol_does(certs):
    """configgrpc dials TLS whenever configtls's LoadTLSConfig gives a config, which it does with a CA
    whatever `insecure` says; such a config was refused at start, where otelcol delivers."""
    server_tls = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key,
                                     client_ca_file=certs.ca_file)
    body = _request(20)

    async def scenario() -> None:
        recorder = Recorder()
        recorder.server.ssl_context = tls.server_ssl_context(server_tls, alpn=["h2"])
        async with recorder as server:
            config = OtlpGrpcConfig.model_validate({"endpoint": f"127.0.0.1:{server.port}", "tls": {
                "insecure": True, "ca_file": certs.ca_file, "cert_file": certs.client_cert,
                "key_file": certs.client_key}})
            exporter = OtlpGrpcExporter("otlp", config)
            await exporter.start()
            try:
                await exporter.send(Signal.TRACES, body)
            finally:
                await exporter.shutdown()
        assert [message for _, _, message in server.calls] == [body]

    asyncio.run(scenario())


class _TwoAddresses(Channel):
    """A name that resolves to two servers (DNS is the only part replaced; the servers are real)."""

    ports: tuple[int, int] = (0, 0)

    async def _resolve(self) -> list[_Subchannel]:
        addresses = [("127.0.0.1", port) for port in self.ports]
        if self.settings.balancer == "round_robin":
            return [_Subchannel(self, [address]) for address in addresses]
        return [_Subchannel(self, addresses)]


@pytest.mark.parametrize("balancer", ["pick_first", "round_robin"])
def test_balancer_spreads_calls_over_resolved_addresses_or_sticks_to_the_first(balancer):
    async def scenario() -> None:
        async with Recorder() as first, Recorder() as second:
            channel = _TwoAddresses(ChannelSettings("collector.test", 4317, balancer=balancer))
            channel.ports = (first.port, second.port)
            try:
                for _ in range(10):
                    await channel.unary(TRACES, b"", timeout=5)
                spread = (len(first.calls), len(second.calls))
                assert spread == ((5, 5) if balancer == "round_robin" else (10, 0)), spread
                await first.server.stop(0.5)  # one address goes away: the other takes every call
                await asyncio.sleep(0.2)  # its GOAWAY is read
                for _ in range(4):
                    await channel.unary(TRACES, b"", timeout=5)
                assert len(second.calls) == spread[1] + 4
            finally:
                await channel.close()

    asyncio.run(scenario())


class _Host:
    def __init__(self, **extensions):
        self.extensions = extensions


def test_authenticator_metadata_authority_and_timeout_reach_the_server(certs):
    server_tls = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)
    seen: list[tuple[str, dict[str, str | bytes]]] = []

    async def scenario() -> None:
        recorder = Recorder()
        recorder.server.ssl_context = tls.server_ssl_context(server_tls, alpn=["h2"])
        original = recorder._export

        async def export(call: grpc_call.GrpcCall) -> bytes:
            seen.append((call.method, dict(call.metadata)))
            return await original(call)

        recorder.server.handlers[TRACES] = export
        auth = BearerTokenAuth("bearertokenauth", BearerTokenAuthConfig(token="edge-token"))
        await auth.start()
        async with recorder as server:
            config = OtlpGrpcConfig.model_validate({
                "endpoint": f"127.0.0.1:{server.port}", "authority": "collector.test",
                "auth": {"authenticator": "bearertokenauth"},
                "tls": {"ca_file": certs.ca_file, "server_name_override": "localhost"}})
            exporter = OtlpGrpcExporter("otlp", config, _Host(bearertokenauth=auth))
            await exporter.start()
            try:
                await exporter.send(Signal.TRACES, _request(3))
            finally:
                await exporter.shutdown()

    asyncio.run(scenario())
    ((method, metadata),) = seen
    assert method == TRACES
    assert metadata["authorization"] == "Bearer edge-token"


def test_a_bearer_token_is_never_sent_over_a_plaintext_connection():
    """otelcol 0.165's otlp exporter does not start with bearertokenauth and `tls: {insecure: true}`
    (grpc: "the credentials require transport level security"); this one started and sent the
    token in clear text."""
    async def scenario() -> None:
        auth = BearerTokenAuth("bearertokenauth", BearerTokenAuthConfig(token="edge-token"))
        await auth.start()
        config = OtlpGrpcConfig.model_validate({"endpoint": f"127.0.0.1:{free_port()}", "tls": {"insecure": True},
                                                "auth": {"authenticator": "bearertokenauth"}})
        exporter = OtlpGrpcExporter("otlp", config, _Host(bearertokenauth=auth))
        try:
            with pytest.raises(ValueError, match="require transport level security"):
                await exporter.start()
        finally:
            await exporter.shutdown()

    asyncio.run(scenario())


def test_request_headers_carry_authority_deadline_and_encodings():
    async def scenario() -> dict[bytes, bytes]:
        async with H2Peer("ok") as peer:
            exporter = _exporter(peer.port, authority="collector.test", timeout="3s", compression="snappy")
            await exporter.start()
            try:
                await exporter.send(Signal.TRACES, _request(3))
            finally:
                await exporter.shutdown()
            (headers,) = peer.headers
            return headers

    headers = asyncio.run(scenario())
    assert headers[b":authority"] == b"collector.test" and headers[b":path"] == TRACES.encode()
    assert headers[b"content-type"] == b"application/grpc" and headers[b"te"] == b"trailers"
    assert headers[b"grpc-encoding"] == b"snappy"
    assert set(headers[b"grpc-accept-encoding"].split(b",")) >= {b"gzip", b"zstd", b"snappy"}
    value, unit = int(headers[b"grpc-timeout"][:-1]), headers[b"grpc-timeout"][-1:]
    assert unit == b"u" and 2.5e6 < value <= 3e6, headers[b"grpc-timeout"]


def test_a_replaced_ca_file_is_used_for_the_next_connection(certs, tmp_path):
    # the upstream restarts with a certificate from a new CA, and the exporter's ca_file is
    # replaced with that CA: the next connection must verify with the new file
    ca_file = str(tmp_path / "trusted.crt")
    replace(certs.ca_file, ca_file)
    rotated = Authority(str(tmp_path), "rotated CA")
    new_cert, new_key = rotated.issue("server-rotated")
    server_tls = tls.TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)

    async def scenario() -> None:
        first = Recorder()
        first.server.ssl_context = tls.server_ssl_context(server_tls, alpn=["h2"])
        async with first:
            exporter = _exporter(first.port, tls={"ca_file": ca_file})
            await exporter.start()
            await exporter.send(Signal.TRACES, _request(1))
        replace(new_key, certs.server_key)
        replace(new_cert, certs.server_cert)
        replace(rotated.ca_file, ca_file)
        second = Recorder()
        second.server.ssl_context = tls.server_ssl_context(server_tls, alpn=["h2"])
        try:
            await second.server.start("127.0.0.1", first.port)
            await exporter.send(Signal.TRACES, _request(1))
            assert len(second.calls) == 1
        finally:
            await exporter.shutdown()
            await second.server.stop(1)

    asyncio.run(scenario())


def test_a_compressed_response_is_decoded_and_its_partial_success_counted():
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 2
    response.partial_success.error_message = "two spans too old"

    async def scenario() -> None:
        async with H2Peer("gzip_response", response=response.SerializeToString()) as peer:
            exporter = _exporter(peer.port)
            await exporter.start()
            try:
                result = await exporter.send(Signal.TRACES, _request(5))
            finally:
                await exporter.shutdown()
        assert (result.rejected, result.message) == (2, "two spans too old")

    asyncio.run(scenario())


def test_a_server_calling_our_pings_too_many_makes_the_channel_ping_half_as_often():
    # our own server with grpc-go's enforcement: pings without calls are not permitted
    async def scenario() -> None:
        async with Recorder() as server:
            settings = ChannelSettings("127.0.0.1", server.port, keepalive_time=0.1, keepalive_timeout=5,
                                       keepalive_without_calls=True)
            channel = Channel(settings)
            try:
                await channel.unary(TRACES, b"", timeout=5)
                wait = asyncio.get_running_loop().time() + 5
                while channel.settings.keepalive_time == 0.1 and asyncio.get_running_loop().time() < wait:
                    await asyncio.sleep(0.05)
                assert channel.settings.keepalive_time == 0.2
                assert await channel.unary(TRACES, b"", timeout=5) == b""  # on a new connection
            finally:
                await channel.close()

    asyncio.run(scenario())


def test_messages_larger_than_every_flow_control_window_arrive_whole():
    # the server grants 1 MiB per stream and 8 MiB per connection: three 12 MiB calls at once
    # must wait for its WINDOW_UPDATEs, share the connection window and arrive intact
    messages = [bytes([index]) * (12 << 20) for index in range(3)]

    async def scenario() -> None:
        async with Recorder() as server:
            channel = Channel(ChannelSettings("127.0.0.1", server.port))
            try:
                await asyncio.gather(*(channel.unary(TRACES, message, timeout=30) for message in messages))
            finally:
                await channel.close()
        assert sorted(message for _, _, message in server.calls) == messages

    asyncio.run(scenario())


def test_a_call_answered_before_its_request_was_sent_frees_its_stream():
    # the server allows one stream at a time; were the first call's stream left open on our
    # side, the second call would wait for it until its deadline
    async def scenario() -> None:
        async with H2Peer("early_answer") as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port))
            try:
                for _ in range(2):
                    with pytest.raises(GrpcStatusError) as answered:
                        await channel.unary(TRACES, bytes(4 << 20), timeout=3)
                    assert answered.value.code == StatusCode.UNAVAILABLE
            finally:
                await channel.close()
            assert peer.connections == 1 and len(peer.headers) == 2

    asyncio.run(scenario())


def test_a_refused_connection_is_unanswered_and_a_peer_speaking_http1_is_not():
    """Only a connection that was never made may be watched for with a TCP connect (exporters.reach):
    a peer that accepted it and answered badly is listening."""
    async def scenario() -> None:
        channel = Channel(ChannelSettings("127.0.0.1", free_port()))
        with pytest.raises(GrpcStatusError) as refused:
            await channel.unary(TRACES, b"", timeout=5)
        await channel.close()
        assert refused.value.code == StatusCode.UNAVAILABLE and refused.value.unanswered
        async with H2Peer("http1") as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port))
            with pytest.raises(GrpcStatusError) as answered:
                await channel.unary(TRACES, b"", timeout=5)
            await channel.close()
        assert answered.value.code == StatusCode.UNAVAILABLE and not answered.value.unanswered

    asyncio.run(scenario())


@pytest.mark.parametrize("abort_after,keepalive", [(1.0, 0.0), (0.0, 0.5)])
def test_a_connection_lost_while_a_large_request_waits_to_be_written_ends_the_call_at_once(abort_after, keepalive):
    # the peer grants large windows and stops reading, so the request backs up until the transport
    # pauses writing; when the connection is then reset (or found dead by keepalive) the call must end
    # UNAVAILABLE, not wait for a resume that never comes until its deadline (for ever without one)
    async def scenario() -> None:
        async with H2Peer("stalled", abort_after=abort_after) as peer:
            channel = Channel(ChannelSettings("127.0.0.1", peer.port, keepalive_time=keepalive,
                                              keepalive_timeout=keepalive or 20.0))
            started = time.monotonic()
            try:
                with pytest.raises(GrpcStatusError) as failed:
                    await channel.unary(TRACES, bytes(32 << 20), timeout=20)
            finally:
                await channel.close()
            elapsed = time.monotonic() - started
            assert failed.value.code == StatusCode.UNAVAILABLE, failed.value
            assert elapsed < 5, elapsed

    asyncio.run(scenario())


def test_a_link_local_endpoint_with_its_zone_is_dialled_on_that_zone():
    """`[fe80::1%eth0]:4317` is an address only with its zone (the interface): its lookup gives the
    zone as the scope id, which a connect needs. The channel kept the address alone, and every
    connect failed with EINVAL where otlphttp, grpc-go and otelcol connect."""
    host = link_local()
    if host is None:
        pytest.skip("no IPv6 link-local address on this host")

    async def scenario() -> None:
        server = Recorder()
        port = await server.server.start(host, 0)
        exporter = OtlpGrpcExporter("otlp", OtlpGrpcConfig.model_validate(
            {"endpoint": f"[{host}]:{port}", "tls": {"insecure": True}, "timeout": "5s"}))
        await exporter.start()
        try:
            await exporter.send(Signal.TRACES, _request(3))
        finally:
            await exporter.shutdown()
            await server.server.stop(1)
        assert [message for _, _, message in server.calls] == [_request(3)]

    asyncio.run(scenario())


def test_a_channel_closed_while_a_call_looks_its_name_up_opens_no_connection():
    """A stop (or a reload) closes the channel while a call waits for the name's addresses: the
    lookup's answer set up subchannels on the closed channel, the call connected and went out, and
    nothing closed that connection again (one left open for each such stop)."""
    async def scenario() -> None:
        async with Recorder() as server:
            channel = Channel(ChannelSettings("localhost", server.port))
            call = asyncio.ensure_future(channel.unary(TRACES, b"", timeout=5))
            await asyncio.sleep(0)  # the call is waiting for the lookup (on its thread)
            await channel.close()
            with pytest.raises(GrpcStatusError) as failed:
                await call
            assert failed.value.code == StatusCode.CANCELLED
            assert channel._subchannels == []
            assert server.calls == []

    asyncio.run(scenario())


@pytest.mark.e2e  # takes seconds: three connects a backoff apart
def test_a_call_waiting_for_ready_without_a_deadline_keeps_its_last_connect_error_only():
    """With wait_for_ready and no timeout (`timeout: 0`) a call tries to connect for as long as the
    upstream is away, every 5 s at most; it kept every failed connect's message, of which it only
    ever says the last: megabytes a day for each call waiting through an outage."""
    port = _unused_port()

    async def scenario() -> list[str]:
        channel = Channel(ChannelSettings("127.0.0.1", port))
        failures: list[str] = []
        waiting = asyncio.ensure_future(channel._connection(True, failures))
        await asyncio.sleep(3.0)  # connects at 0, 1 and 2.6 s
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await channel.close()
        return failures

    failures = asyncio.run(scenario())
    assert len(failures) == 1 and "cannot connect" in failures[0], failures
