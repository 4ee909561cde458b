"""otlp_grpc's configgrpc client keys read_buffer_size, write_buffer_size, user_agent and
middlewares (otelcol's names), against our own gRPC server on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pydantic import ValidationError

from edgeagent.exporters.otlp import OtlpGrpcConfig
from edgeagent.signals import Signal
from tests.exporters.test_grpc_client import Recorder, _exporter, _request


async def _send_and_inspect(**settings) -> tuple[dict[str, str | bytes], tuple[int, int]]:
    """One call; its metadata at the server, and the (SO_RCVBUF, SO_SNDBUF) of the client's connection."""
    async with Recorder() as server:
        exporter = _exporter(server.port, **settings)
        await exporter.start()
        try:
            await exporter.send(Signal.TRACES, _request(3))
            (subchannel,) = exporter._channel._subchannels
            sock = subchannel.connection._transport.get_extra_info("socket")
            sizes = (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                     sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
        finally:
            await exporter.shutdown()
    return server.calls[0][1], sizes


def test_read_and_write_buffer_size_size_the_connections_socket_buffers():
    _, sizes = asyncio.run(_send_and_inspect(read_buffer_size=96 * 1024, write_buffer_size=48 * 1024))
    assert sizes == (2 * 96 * 1024, 2 * 48 * 1024)  # Linux doubles them for its bookkeeping
    _, defaults = asyncio.run(_send_and_inspect(read_buffer_size=0, write_buffer_size=-1))
    assert defaults != sizes  # 0 or less keeps the system's, as otelcol ignores them


def test_user_agent_goes_before_edgeagents_own():
    metadata, _ = asyncio.run(_send_and_inspect(user_agent="acme-edge/2.1"))
    assert str(metadata["user-agent"]).startswith("acme-edge/2.1 edgeagent/")
    metadata, _ = asyncio.run(_send_and_inspect())
    assert str(metadata["user-agent"]).startswith("edgeagent/")


def test_client_middlewares_only_empty():
    assert OtlpGrpcConfig(endpoint="collector:4317", middlewares=[]).middlewares == []
    with pytest.raises(ValidationError, match="no extension can be a gRPC client middleware"):
        OtlpGrpcConfig(endpoint="collector:4317", middlewares=[{"id": "oidc"}])


@pytest.mark.parametrize("agent", ["acme\r\nX-Injected: 1", "acme\nedge", "acme\x00", "acme\x7f"])
def test_a_user_agent_with_a_control_character_is_refused_naming_the_key(agent):
    # it goes into a proxy's CONNECT head as well as the calls' headers: a CR or LF would add a header
    with pytest.raises(ValidationError, match="user_agent.*control character"):
        OtlpGrpcConfig(endpoint="collector:4317", user_agent=agent)
    assert OtlpGrpcConfig(endpoint="collector:4317", user_agent="acme edge/2.1\t(x)").user_agent


@pytest.mark.parametrize("agent", [" acme", "\tacme", "acme ", "acme\t"])
def test_a_user_agent_starting_or_ending_in_whitespace_is_refused_naming_the_key_and_the_fix(agent):
    # an HTTP/2 field value must not start or end in whitespace: our own receiver dropped such
    # calls' connection, and the export was retried for ever
    with pytest.raises(ValidationError, match=r"user_agent .* starts or ends with whitespace.*remove it"):
        OtlpGrpcConfig(endpoint="collector:4317", user_agent=agent)
