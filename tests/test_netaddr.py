"""edgeagent.netaddr: where a server listens for a `transport` and `endpoint`, as Go's net.Listen."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from edgeagent import netaddr


def _listen(transport: str, endpoint: str) -> netaddr.Address:
    return asyncio.run(netaddr.listen(transport, endpoint, 4318))


@pytest.mark.parametrize(("transport", "endpoint", "host"), [
    ("tcp4", "localhost:4318", "127.0.0.1"),  # a name binds its first address of the family
    ("tcp4", ":4318", "0.0.0.0"),  # an empty host: every address of the family
    ("tcp6", ":4318", "::"),
    ("tcp", ":4318", "0.0.0.0"),
])
def test_tcp_transports_bind_their_address_family(transport, endpoint, host):
    address = _listen(transport, endpoint)
    assert (address.host, address.port) == (host, 4318)


@pytest.mark.parametrize(("transport", "endpoint"), [("tcp6", "127.0.0.1:4318"), ("tcp4", "[::1]:4318")])
def test_a_literal_of_the_other_family_is_an_error_as_in_go(transport, endpoint):
    with pytest.raises(OSError, match="no IPv"):
        _listen(transport, endpoint)


def test_an_abstract_unix_socket_has_no_file_to_remove():
    name = f"@edgeagent-tests-{uuid.uuid4().hex}"
    address = _listen("unix", name)
    try:
        assert address.sock is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect("\0" + name[1:])
    finally:
        address.sock.close()
        netaddr.close(address)


def test_close_removes_the_socket_file_but_not_another_kind_of_file(tmp_path):
    path = tmp_path / "s.sock"
    address = _listen("unix", str(path))
    assert address.sock is not None
    address.sock.close()
    netaddr.close(address)
    assert not path.exists()
    path.write_text("someone else's")  # put there after the socket went: not ours to remove
    netaddr.close(address)
    assert path.exists()


@pytest.mark.parametrize("transport", ["udp", "ip6", "unixgram", "unixpacket", "npipe", "bogus", ""])
def test_transports_that_cannot_serve_http_or_grpc_are_refused_saying_why(transport):
    with pytest.raises(ValueError, match=f"transport '{transport}' is not supported: "):
        netaddr.check_transport(transport)


def test_every_server_reads_its_endpoint_as_a_path_when_the_transport_is_unix():
    from edgeagent.extensions.health_check import HealthCheckConfig
    from edgeagent.receivers.otlp import GrpcConfig, HttpConfig
    for model in (GrpcConfig, HttpConfig, HealthCheckConfig):
        assert model(transport="unix", endpoint="/run/edge:agent.sock").endpoint == "/run/edge:agent.sock"
        with pytest.raises(ValueError, match="host:port"):  # the same text is no host:port
            model(transport="tcp", endpoint="/run/edge:agent.sock")
