"""What the gRPC server makes of a call's header fields, checked stream by stream as grpc-go checks
them: a field grpc-go refuses resets that call's stream alone (or answers it), and the calls in
flight on the same connection complete; what grpc-go accepts is served."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from edgeagent.receivers.grpc_call import INTERNAL, Limits
from tests.receivers.test_grpc_server import METHOD, H2Client, Served, _status

REQUEST = ((":method", "POST"), (":scheme", "http"), (":path", METHOD), (":authority", "127.0.0.1"),
           ("content-type", "application/grpc"), ("te", "trailers"))


@pytest.fixture
def slow() -> Iterator[Served]:
    """A server whose calls take a moment, so that some are in flight when the odd one arrives."""
    server = Served(Limits(max_message_bytes=1 << 20), delay=0.3)
    yield server
    server.close()


class RawHeaders(H2Client):
    """A client that sends header fields as given: h2 neither checks nor normalizes what it sends."""

    def __init__(self, port: int):
        super().__init__(port)
        self.h2.config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                                   normalize_outbound_headers=False)

    def call(self, fields: tuple[tuple[str, str], ...], message: bytes) -> int:
        stream = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream, list(fields))
        self.h2.send_data(stream, struct.pack(">BI", 0, len(message)) + message, end_stream=True)
        return stream


def _with(*extra: tuple[str, str], without: str = "") -> tuple[tuple[str, str], ...]:
    return tuple(field for field in REQUEST if field[0] != without) + extra


def _in_flight(client: RawHeaders) -> list[int]:
    """Two calls the server is handling when the next one's headers arrive."""
    client.events(lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
    streams = [client.call(REQUEST, b"in flight") for _ in range(2)]
    client.flush()
    time.sleep(0.1)
    return streams


@pytest.mark.parametrize("metadata", [("authorization", "Bearer abc "), ("tenant", " a"), ("x-note", "  a b  ")])
def test_grpcio_metadata_with_surrounding_whitespace_is_served_as_grpc_go_serves_it(slow, metadata):
    """RFC 9113 calls such a value malformed and h2 ended the whole connection for it (GOAWAY
    PROTOCOL_ERROR): the call failed UNAVAILABLE, which clients retry, every retry failed again,
    and the calls beside it on the connection failed too. grpc-go takes the value as it is."""
    with grpc.insecure_channel(f"127.0.0.1:{slow.port}") as channel:
        assert channel.unary_unary(METHOD)(b"kept", timeout=5, metadata=[metadata]) == b""
    assert slow.received == [b"kept"]
    assert slow.metadata[0][metadata[0]] == metadata[1]


@pytest.mark.parametrize("fields", [
    _with(("te", "gzip")),  # grpc-go reads no te at all
    _with(without=":scheme"),
    _with(("host", "elsewhere:4317")),  # :authority wins, as grpc-go discards host beside it
    _with(("x-empty", "")),
    _with(("content-length", "3")),  # a proxy's HTTP/1.1 length, which grpc-go never reads
    _with(("content-length", "99999")),
    _with(("content-length", "unknown")),
], ids=["te-other-than-trailers", "no-scheme", "host-unlike-authority", "empty-value", "content-length-short",
        "content-length-long", "content-length-no-number"])
def test_fields_grpc_go_accepts_are_served_and_the_calls_in_flight_complete(slow, fields):
    client = RawHeaders(slow.port)
    in_flight = _in_flight(client)
    odd = client.call(fields, b"odd")
    client.flush()
    streams = [*in_flight, odd]
    events = client.events(lambda seen: all(_status(seen, stream) is not None for stream in streams))
    assert [_status(events, stream) for stream in streams] == ["0", "0", "0"]
    assert sorted(slow.received) == [b"in flight", b"in flight", b"odd"]


@pytest.mark.parametrize("fields", [
    _with(("X-Upper", "1")),
    _with(("connection", "keep-alive")),  # grpc-go's A41: malformed
    _with(("", "1")),
    _with(("x-bad", "a\x01b")),
    _with((":authority", "again")),
    _with((":custom", "1")),
    (("content-type", "application/grpc"), *REQUEST[:-2]),  # a pseudo-header after a regular one
], ids=["uppercase-name", "connection", "empty-name", "control-character", "duplicate-pseudo", "unknown-pseudo",
        "pseudo-after-regular"])
def test_a_field_grpc_go_refuses_resets_that_stream_alone_and_the_calls_in_flight_complete(slow, fields):
    """h2 ended the connection for it (GOAWAY): every call in flight on it failed UNAVAILABLE.
    Go's HTTP/2 framer makes it a stream error, and grpc-go resets that stream alone."""
    client = RawHeaders(slow.port)
    in_flight = _in_flight(client)
    odd = client.call(fields, b"odd")
    client.flush()
    events = client.events(lambda seen: all(_status(seen, stream) is not None for stream in in_flight))
    assert [_status(events, stream) for stream in in_flight] == ["0", "0"]
    resets = [(event.stream_id, event.error_code) for event in events if isinstance(event, h2.events.StreamReset)]
    assert resets == [(odd, h2.errors.ErrorCodes.PROTOCOL_ERROR)]
    assert not any(isinstance(event, h2.events.ConnectionTerminated) for event in events)
    assert slow.received == [b"in flight", b"in flight"]


@pytest.mark.parametrize(("fields", "words"), [
    (_with(without=":authority"), "no host or :authority header present"),
    (_with(("host", "a"), ("host", "b")), "num values of :authority: 1, num values of host: 2"),
], ids=["no-authority-nor-host", "two-hosts"])
def test_a_call_without_one_authority_gets_400_internal_as_grpc_go_answers_and_the_others_complete(
        slow, fields, words):
    client = RawHeaders(slow.port)
    in_flight = _in_flight(client)
    odd = client.call(fields, b"odd")
    client.flush()
    streams = [*in_flight, odd]
    events = client.events(lambda seen: all(_status(seen, stream) is not None for stream in streams))
    assert [_status(events, stream) for stream in streams] == ["0", "0", str(INTERNAL)]
    answer = next(dict(event.headers) for event in events
                  if isinstance(event, h2.events.ResponseReceived) and event.stream_id == odd)
    assert answer[b":status"] == b"400" and words in answer[b"grpc-message"].decode()
    assert slow.received == [b"in flight", b"in flight"]
