"""What the gRPC client makes of an answer's header fields, checked call by call as grpc-go's client
checks them (x/net's readMetaFrame, then operateHeaders): a field grpc-go refuses ends that call
INTERNAL and resets its stream, the calls beside it on the connection going on; what grpc-go
takes (whitespace around a value, a content-length that does not add up, connection-specific
fields, a pseudo-header in trailers) is taken. h2's own checks ended the whole connection: every
call on it failed UNAVAILABLE, and the retry met the same answer."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from hyperframe.frame import HeadersFrame

from edgeagent.exporters.grpc_client import Channel
from edgeagent.exporters.grpc_connection import ChannelSettings, GrpcStatusError
from edgeagent.grpc_status import StatusCode

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HEAD = [(b":status", b"200"), (b"content-type", b"application/grpc")]
OK = [(b"grpc-status", b"0")]
MESSAGE = struct.pack(">BI", 0, 5) + b"hello"

# an answer: its head, and its trailers after the message
ANSWERS: dict[str, tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]] = {
    "ok": (HEAD, OK),
    # taken by grpc-go as they come
    "value-with-trailing-space": (HEAD + [(b"x-note", b"a ")], OK),
    "value-with-leading-tab": (HEAD + [(b"x-note", b"\ta")], OK),
    "trailer-value-with-spaces": (HEAD, OK + [(b"x-trace", b" b ")]),
    "content-length-short": (HEAD + [(b"content-length", b"3")], OK),
    "content-length-not-a-number": (HEAD + [(b"content-length", b"many")], OK),
    "connection-field": (HEAD + [(b"connection", b"keep-alive"), (b"transfer-encoding", b"chunked")], OK),
    "te-other-than-trailers": (HEAD + [(b"te", b"gzip")], OK),
    "status-in-trailers": (HEAD, [(b":status", b"200")] + OK),
    "http-status-not-a-number": ([(b":status", b"2oo")] + HEAD[1:], OK),  # a gRPC answer: grpc-go reads no :status
    # refused by grpc-go's framer: that call alone ends INTERNAL with the framer's words
    "uppercase-name": (HEAD + [(b"X-Note", b"a")], OK),
    "uppercase-name-in-trailers": (HEAD, OK + [(b"X-Trace", b"b")]),
    "control-character-in-value": (HEAD + [(b"x-note", b"a\x01b")], OK),
    "empty-name": (HEAD + [(b"", b"a")], OK),
    "pseudo-after-regular": ([(b"content-type", b"application/grpc"), (b":status", b"200")], OK),
    "unknown-pseudo": ([(b":status", b"200"), (b":note", b"a")] + HEAD[1:], OK),
    "repeated-pseudo": ([(b":status", b"200"), (b":status", b"200")] + HEAD[1:], OK),
    "request-pseudo-in-answer": ([(b":status", b"200"), (b":path", b"/")] + HEAD[1:], OK),
    "headers-midway": (HEAD, OK),  # then a second head before the message (see _Peer)
    # read by grpc-go's operateHeaders: a status that is no integer as Go's ParseInt reads one
    "status-with-trailing-space": (HEAD, [(b"grpc-status", b"0 ")]),
    "status-with-underscore": (HEAD, [(b"grpc-status", b"0_0")]),
    # over the header list size the client advertises
    "long-message": (HEAD, [(b"grpc-status", b"3"), (b"grpc-message", b"x" * 100_000)]),
}
REFUSED = {
    "uppercase-name": 'invalid header field name "X-Note"',
    "uppercase-name-in-trailers": 'invalid header field name "X-Trace"',
    "control-character-in-value": 'invalid header field value for "x-note"',
    "empty-name": 'invalid header field name ""',
    "pseudo-after-regular": "pseudo header field after regular",
    "unknown-pseudo": 'invalid pseudo-header ":note"',
    "repeated-pseudo": 'duplicate pseudo-header ":status"',
    "request-pseudo-in-answer": "mix of request and response pseudo headers",
    "headers-midway": "a HEADERS frame cannot appear in the middle of a stream",
}
MALFORMED_STATUS = {
    "status-with-trailing-space": 'transport: malformed grpc-status: strconv.ParseInt: parsing "0 ": invalid syntax',
    "status-with-underscore": 'transport: malformed grpc-status: strconv.ParseInt: parsing "0_0": invalid syntax',
}


@dataclass
class OddUpstream:
    """A gRPC server written by hand: it answers each call as its `x-answer` metadata names (after
    `x-delay` seconds), header fields as given, unchecked, the message and trailers a moment after
    the head; it counts connections and the codes of the streams the client reset."""

    connections: int = 0
    resets: dict[str, int] = field(default_factory=dict)
    transports: list[asyncio.Transport] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> OddUpstream:
        self._server = await asyncio.get_running_loop().create_server(lambda: _Peer(self), "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self.transports:
            transport.abort()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])


class _Peer(asyncio.Protocol):
    def __init__(self, owner: OddUpstream):
        owner.connections += 1
        self.owner = owner
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self.answers: dict[int, str] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.transports.append(transport)
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(event.headers)
                self.answers[event.stream_id] = headers.get(b"x-answer", b"ok").decode()
                delay = float(headers.get(b"x-delay", b"0"))
                asyncio.get_running_loop().call_later(delay, self._answer, event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset) and event.stream_id in self.answers:
                self.owner.resets[self.answers[event.stream_id]] = int(event.error_code)
        self._flush()

    def _answer(self, stream_id: int) -> None:
        self.h2.send_headers(stream_id, ANSWERS[self.answers[stream_id]][0])
        if self.answers[stream_id] == "headers-midway":  # a second HEADERS without END_STREAM, which h2 never sends
            block = HeadersFrame(stream_id, data=self.h2.encoder.encode([(b"x-more", b"1")]), flags=["END_HEADERS"])
            self.h2._data_to_send += block.serialize()
        self._flush()
        asyncio.get_running_loop().call_later(0.05, self._end, stream_id)

    def _end(self, stream_id: int) -> None:
        try:
            self.h2.send_data(stream_id, MESSAGE)
            self.h2.send_headers(stream_id, ANSWERS[self.answers[stream_id]][1], end_stream=True)
        except h2.exceptions.StreamClosedError:
            pass  # the client reset it after its head
        self._flush()

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())


async def _calls(answer: str) -> tuple[list[bytes | BaseException], OddUpstream]:
    """Two slow calls in flight, then one answered as `answer` says, then one more call."""
    async with OddUpstream() as upstream:
        channel = Channel(ChannelSettings("127.0.0.1", upstream.port))
        try:
            slow = [asyncio.create_task(channel.unary(METHOD, b"", timeout=5, metadata=[("x-delay", "0.3")]))
                    for _ in range(2)]
            await asyncio.sleep(0.1)
            odd = await asyncio.gather(channel.unary(METHOD, b"", timeout=5, metadata=[("x-answer", answer)]),
                                       return_exceptions=True)
            results = [*odd, *await asyncio.gather(*slow, return_exceptions=True)]
            results.append(await channel.unary(METHOD, b"", timeout=5))
            await asyncio.sleep(0.05)  # the reset reaches the upstream
        finally:
            await channel.close()
    return results, upstream


@pytest.mark.parametrize("answer", [name for name in ANSWERS
                                    if name not in REFUSED and name not in MALFORMED_STATUS and name != "long-message"])
def test_header_fields_grpc_go_takes_are_taken(answer):
    results, upstream = asyncio.run(_calls(answer))
    assert results == [b"hello"] * 4
    assert upstream.connections == 1


@pytest.mark.parametrize("answer", list(REFUSED))
def test_header_fields_grpc_go_refuses_end_that_call_alone(answer):
    results, upstream = asyncio.run(_calls(answer))
    refused, *others = results
    assert isinstance(refused, GrpcStatusError), refused
    assert (refused.code, refused.message) == (StatusCode.INTERNAL, REFUSED[answer])
    assert others == [b"hello"] * 3  # the calls in flight beside it, and the next one on the same connection
    assert upstream.connections == 1
    if answer != "uppercase-name-in-trailers":  # (trailers end the stream: nothing is left to reset)
        assert upstream.resets == {answer: h2.errors.ErrorCodes.PROTOCOL_ERROR}


@pytest.mark.parametrize("answer", list(MALFORMED_STATUS))
def test_a_grpc_status_go_cannot_parse_ends_that_call_unknown(answer):
    results, upstream = asyncio.run(_calls(answer))
    refused, *others = results
    assert isinstance(refused, GrpcStatusError), refused
    assert (refused.code, refused.message) == (StatusCode.UNKNOWN, MALFORMED_STATUS[answer])
    assert others == [b"hello"] * 3
    assert upstream.connections == 1


def test_a_header_list_over_the_limit_ends_that_call_alone():
    """A list over what the client advertised (64 KiB; grpc-go's 16 MiB) is truncated by grpc-go's
    framer, which ends that call INTERNAL and resets its stream; h2 ended the connection."""
    results, upstream = asyncio.run(_calls("long-message"))
    refused, *others = results
    assert isinstance(refused, GrpcStatusError), refused
    assert (refused.code, refused.message) == (StatusCode.INTERNAL, "peer header list size exceeded limit")
    assert others == [b"hello"] * 3
    assert upstream.connections == 1
