"""The HTTP/2 gRPC server on its own: real grpcio clients and hand-written h2 calls over loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import unquote

import cramjam
import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import zstandard
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

from edgeagent import tls
from edgeagent.errors import BadRequestError
from edgeagent.receivers import grpc_call, grpc_server
from edgeagent.receivers.grpc_call import GrpcCall, GrpcError, Limits
from edgeagent.tls import TlsServerConfig
from tests.helpers import grpc_raw

METHOD = grpc_raw.TRACE_METHOD


class Served:
    """A server on its own event loop in a thread, so blocking clients can call it."""

    def __init__(self, limits: Limits, ssl_context=None, delay: float = 0.0):
        self.received: list[bytes] = []
        self.metadata: list[dict[str, str | bytes]] = []
        self.delay = delay
        self.loop = asyncio.new_event_loop()
        self.server = grpc_server.GrpcServer({METHOD: self.echo, "/refuse/Early": self.refuse,
                                              "/own/Deadline": self.own_deadline, "/large/Answer": self.large},
                                             limits, ssl_context)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop).result(10)

    async def echo(self, call: GrpcCall) -> bytes:
        try:
            message = await call.read()
        except BadRequestError as exc:  # as the receiver maps it
            raise GrpcError(grpc_call.RESOURCE_EXHAUSTED if exc.status == 413 else grpc_call.INVALID_ARGUMENT,
                            str(exc)) from None
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append(message)
        self.metadata.append(dict(call.metadata))
        return b"\x0a\x00" if message == b"partial" else b""

    async def own_deadline(self, call: GrpcCall) -> bytes:
        """Reads, takes over its deadline as a receiver does before it commits, then outlives it."""
        message = await call.read()
        deadline = call.own_deadline()
        assert deadline is not None
        await asyncio.sleep(max(deadline - asyncio.get_running_loop().time(), 0) + self.delay)
        self.received.append(message)
        return b""

    async def large(self, call: GrpcCall) -> bytes:
        return bytes([len(await call.read())]) * 300_000

    async def refuse(self, call: GrpcCall) -> bytes:
        raise GrpcError(grpc_call.UNAVAILABLE, "not now", [("grpc-status-details-bin", b"\x08\x0e")])

    def stop(self, grace: float = 2.0) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(grace + 10)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served() -> Iterator[Served]:
    server = Served(Limits(max_message_bytes=1 << 20, max_concurrent_streams=8, connection_window=1 << 20,
                           stream_window=256 << 10, idle_timeout=1.0, handshake_timeout=1.0))
    yield server
    server.close()


def test_grpcio_client_call_reaches_the_handler_with_its_metadata(served):
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        answer = channel.unary_unary(METHOD)(b"hello" * 1000, timeout=5, metadata=[("tenant", "a"),
                                                                                   ("x-bin", b"\x00\x01")])
    assert answer == b""
    assert served.received == [b"hello" * 1000]
    assert served.metadata[0]["tenant"] == "a" and served.metadata[0]["x-bin"] == b"\x00\x01"


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_grpcio_compressed_messages_are_decoded(served, compression):
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        channel.unary_unary(METHOD)(b"abc" * 10000, timeout=5, compression=compression)
    assert served.received == [b"abc" * 10000]


@pytest.mark.parametrize(("encoding", "compress"), [
    ("zstd", lambda data: zstandard.ZstdCompressor().compress(data)),
    ("snappy", lambda data: bytes(cramjam.snappy.compress(data))),
    ("snappy", lambda data: bytes(cramjam.snappy.compress_raw(data))),
])
def test_zstd_and_snappy_messages_grpcio_would_refuse_are_decoded(served, encoding, compress):
    message = b"span" * 50000
    assert grpc_raw.call(served.port, compress(message), encoding) == (0, "")
    assert served.received == [message]


def test_an_unknown_encoding_is_unimplemented(served):
    assert grpc_raw.call(served.port, b"xx", "brotli")[0] == grpc.StatusCode.UNIMPLEMENTED.value[0]


@pytest.mark.parametrize(("content_type", "served_as_grpc"), [
    ("application/grpc", True), ("application/grpc+proto", True), ("application/grpc;charset=utf-8", True),
    ("application/grpc-web", False), ("application/grpcx", False), ("text/plain", False)])
def test_only_grpc_content_types_are_served_others_get_415_with_invalid_argument_as_grpc_go_answers(
        served, content_type, served_as_grpc):
    """A grpc-web client reads its status from the body, never from HTTP/2 trailers: served as
    gRPC, its data was kept while it saw the call fail, and sent it again."""
    status, message = grpc_raw.call(served.port, b"x", content_type=content_type, timeout=5)
    if served_as_grpc:
        assert (status, served.received) == (0, [b"x"])
    else:
        assert (status, served.received) == (grpc_call.INVALID_ARGUMENT, [])
        assert message == f'invalid gRPC request content-type "{content_type}"'  # Go's %q


def test_an_unknown_method_is_unimplemented(served):
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel, pytest.raises(grpc.RpcError) as error:
        channel.unary_unary("/no.Such/Method")(b"", timeout=5)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_handler_error_becomes_its_status_and_trailers(served):
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel, pytest.raises(grpc.RpcError) as error:
        channel.unary_unary("/refuse/Early")(b"x" * 300_000, timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.value.details() == "not now"
    assert dict(error.value.trailing_metadata())["grpc-status-details-bin"] == b"\x08\x0e"


def test_a_message_over_the_limit_gets_resource_exhausted(served):
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel, pytest.raises(grpc.RpcError) as error:
        channel.unary_unary(METHOD)(b"x" * ((1 << 20) + 1), timeout=5)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_zstd_bomb_stops_at_the_limit_counted_on_output(served):
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * (8 << 20))
    assert grpc_raw.call(served.port, bomb, "zstd")[0] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def test_grpc_timeout_is_honoured():
    server = Served(Limits(max_message_bytes=1 << 20), delay=5.0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, pytest.raises(grpc.RpcError) as error:
            channel.unary_unary(METHOD)(b"x", timeout=0.3)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        server.close()


@pytest.mark.parametrize("timeout", ["1n", "0S", "0m", "0H"])
def test_a_spent_grpc_timeout_is_answered_deadline_exceeded_without_running_the_handler(served, timeout):
    """grpc-go puts the deadline on the call's context before any handler runs and, finding it
    done already, answers DEADLINE_EXCEEDED ("context deadline exceeded") in one HEADERS frame:
    otelcol's receiver never sees the request, so nothing of it is kept."""
    status, message = grpc_raw.call(served.port, b"spent", metadata=(("grpc-timeout", timeout),))
    assert (status, message) == (grpc.StatusCode.DEADLINE_EXCEEDED.value[0], "context deadline exceeded")
    assert served.received == []
    assert grpc_raw.call(served.port, b"in time", metadata=(("grpc-timeout", "5S"),))[0] == 0
    assert served.received == [b"in time"]


@pytest.mark.parametrize("timeout", ["1x", "S", "1234567890S", "-1S", "1.5S", b"\xb2S"])
def test_a_malformed_grpc_timeout_is_refused_as_grpc_go_refuses_it_not_ignored(served, timeout):
    """grpc-go answers HTTP 400 with INTERNAL ("malformed grpc-timeout: ...") and runs no handler;
    a digit beyond ASCII ("²") must not reach int(), which refuses it with an error of its own."""
    status, message = grpc_raw.call(served.port, b"x", metadata=(("grpc-timeout", timeout),))
    assert status == grpc.StatusCode.INTERNAL.value[0] and message.startswith("malformed grpc-timeout")
    assert served.received == []
    assert grpc_raw.call(served.port, b"y")[0] == 0  # the server goes on


def test_a_deadline_passing_before_the_handler_owns_it_cancels_the_call(served):
    served.delay = 5.0
    started = time.monotonic()
    status, _ = grpc_raw.call(served.port, b"slow", metadata=(("grpc-timeout", "200m"),))
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert time.monotonic() - started < 3 and served.received == []


def test_a_handler_that_owns_its_deadline_is_answered_with_its_outcome_after_it_passes(served):
    """A receiver that has begun to commit a request answers with the commit's outcome, late if need
    be: a DEADLINE_EXCEEDED for data it kept would make the client send it again."""
    served.delay = 0.2
    started = time.monotonic()
    status, _ = grpc_raw.call(served.port, b"kept", path="/own/Deadline", metadata=(("grpc-timeout", "100m"),))
    assert status == 0 and served.received == [b"kept"]
    assert time.monotonic() - started >= 0.3


def test_many_refused_large_calls_do_not_exhaust_the_connection_window(served):
    """Bodies the handler never reads are given back to the connection's flow-control window."""
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        for _ in range(12):  # 12 x 300 kB is more than the 1 MiB connection window
            with pytest.raises(grpc.RpcError):
                channel.unary_unary("/refuse/Early")(b"x" * 300_000, timeout=5)
        channel.unary_unary(METHOD)(b"y" * 300_000, timeout=5)
    assert served.received == [b"y" * 300_000]


class H2Client:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def start(self, path: str = METHOD, metadata: tuple[tuple[str, str], ...] = ()) -> int:
        stream = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                      (":authority", "127.0.0.1"), ("content-type", "application/grpc"),
                                      ("te", "trailers"), *metadata])
        return stream

    def events(self, until, deadline: float = 5.0) -> list[h2.events.Event]:
        seen: list[h2.events.Event] = []
        end = time.monotonic() + deadline
        while not until(seen) and time.monotonic() < end:
            data = self.sock.recv(65536)
            if not data:
                break
            seen += self.h2.receive_data(data)
            self.flush()
        return seen


def _status(events, stream: int) -> str | None:
    for event in events:
        if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived) and event.stream_id == stream:
            status = dict(event.headers).get(b"grpc-status")
            if status is not None:
                return status.decode()
    return None


@pytest.mark.parametrize(("body", "message"), [
    (None, "cardinality violation: received no request message from non-client-streaming RPC"),
    (b"", "cardinality violation: received no request message from non-client-streaming RPC"),
    (b"\x00\x00", "unexpected EOF"),
    (struct.pack(">BI", 0, 100) + b"abc", "unexpected EOF"),
    (struct.pack(">BI", 0, 1) + b"a" + struct.pack(">BI", 0, 1) + b"b",
     "cardinality violation: received multiple request messages for non-client-streaming RPC"),
])
def test_a_call_without_exactly_one_whole_message_is_answered_internal_in_grpc_gos_words(served, body, message):
    client = H2Client(served.port)
    stream = client.start()
    if body is None:  # the request's headers end the stream
        client.h2.end_stream(stream)
    else:
        client.h2.send_data(stream, body, end_stream=True)
    client.flush()
    events = client.events(lambda seen: _status(seen, stream) is not None)
    trailers = [dict(event.headers) for event in events
                if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived)]
    assert _status(events, stream) == str(grpc_call.INTERNAL)
    assert unquote(trailers[-1][b"grpc-message"].decode()) == message
    assert served.received == []


def test_a_reset_stream_leaves_the_others_on_the_connection_working(served):
    client = H2Client(served.port)
    first, second = client.start(), client.start()
    client.h2.send_data(first, struct.pack(">BI", 0, 100) + b"a" * 10)  # half a message, then reset
    client.h2.reset_stream(first)
    client.h2.send_data(second, struct.pack(">BI", 0, 2) + b"ok", end_stream=True)
    client.flush()
    events = client.events(lambda seen: _status(seen, second) is not None)
    assert _status(events, second) == "0"
    assert served.received == [b"ok"]


def test_a_peer_that_resets_every_call_it_opens_is_disconnected(served):
    client = H2Client(served.port)
    for _ in range(150):
        stream = client.start()
        client.h2.send_data(stream, struct.pack(">BI", 0, 100) + b"a")
        client.h2.reset_stream(stream)
    client.flush()
    events = client.events(lambda seen: any(isinstance(e, h2.events.ConnectionTerminated) for e in seen))
    assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == 11 for e in events)
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:  # others are still served
        channel.unary_unary(METHOD)(b"after", timeout=5)


def test_garbage_on_one_connection_leaves_the_others_working(served):
    client = H2Client(served.port)
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as rogue:
        rogue.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64)
        assert rogue.recv(65536) is not None
    stream = client.start()
    client.h2.send_data(stream, struct.pack(">BI", 0, 2) + b"ok", end_stream=True)
    client.flush()
    assert _status(client.events(lambda seen: _status(seen, stream) is not None), stream) == "0"


def test_the_stream_limit_is_advertised(served):
    client = H2Client(served.port)
    client.events(lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
    assert client.h2.remote_settings.max_concurrent_streams == 8


def test_a_ping_is_answered(served):
    client = H2Client(served.port)
    client.h2.ping(b"12345678")
    client.flush()
    events = client.events(lambda seen: any(isinstance(e, h2.events.PingAckReceived) for e in seen))
    assert any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"12345678" for e in events)


def test_an_idle_connection_is_closed(served):
    client = H2Client(served.port)
    started = time.monotonic()
    events = client.events(lambda seen: any(isinstance(e, h2.events.ConnectionTerminated) for e in seen))
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    assert time.monotonic() - started < 4


def test_a_connection_that_never_sends_the_preface_is_closed(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        started = time.monotonic()
        while sock.recv(65536):
            pass
        assert time.monotonic() - started < 4


def _until_closed(client: H2Client, seconds: float, answer: bool) -> tuple[list[h2.events.Event], bool]:
    """What the server sent within `seconds`, and whether it closed the connection; the client
    answers (pings, settings) only if `answer`."""
    seen: list[h2.events.Event] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        client.sock.settimeout(left)
        try:
            data = client.sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            return seen, True
        seen += client.h2.receive_data(data)
        if answer:
            client.flush()
    return seen, False


@pytest.mark.e2e  # takes seconds: waits out keepalive timers
@pytest.mark.parametrize("answers", [True, False])
def test_a_silent_peer_is_pinged_and_dropped_only_if_it_never_answers(answers):
    server = Served(Limits(max_message_bytes=1 << 20, ping_after=0.3, ping_timeout=0.5))
    try:
        events, closed = _until_closed(H2Client(server.port), 3.0, answer=answers)
        assert any(isinstance(e, h2.events.PingReceived) for e in events)
        assert closed is not answers
    finally:
        server.close()


@pytest.mark.e2e  # takes seconds: waits out ping intervals
@pytest.mark.parametrize("permitted", [False, True])
def test_pings_without_calls_are_strikes_unless_permitted(permitted):
    server = Served(Limits(max_message_bytes=1 << 20, min_ping_interval=0.0, pings_without_calls=permitted))
    try:
        client = H2Client(server.port)
        for n in range(4):
            client.h2.ping(b"%08d" % n)
        client.flush()
        events, _ = _until_closed(client, 2.0, answer=False)
        terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        if permitted:
            assert not terminated and sum(isinstance(e, h2.events.PingAckReceived) for e in events) == 4
        else:
            assert terminated[0].error_code == 11 and terminated[0].additional_data == b"too_many_pings"
    finally:
        server.close()


def test_a_call_outliving_max_age_and_its_grace_is_cut_off():
    server = Served(Limits(max_message_bytes=1 << 20, max_age=0.3, age_grace=0.3), delay=3.0)
    try:
        started = time.monotonic()
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, pytest.raises(grpc.RpcError) as error:
            channel.unary_unary(METHOD)(b"slow", timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 2.5
    finally:
        server.close()


def test_buffer_sizes_reach_the_socket():
    server = Served(Limits(max_message_bytes=1 << 20, receive_buffer=1 << 20, send_buffer=1 << 20))
    try:
        client = H2Client(server.port)
        client.events(lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
        connection = next(iter(server.server.connections))
        sock = connection._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 20
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 1 << 20
    finally:
        server.close()


def test_shutdown_lets_calls_in_flight_finish_and_refuses_new_connections():
    server = Served(Limits(max_message_bytes=1 << 20), delay=0.5)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = channel.unary_unary(METHOD).future(b"in flight", timeout=5)
            deadline = time.monotonic() + 5
            while not server.server.connections and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)
            server.stop()
            assert call.result() == b""
        assert server.received == [b"in flight"]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    finally:
        server.close()


def test_tls_with_alpn_h2_serves_a_grpcio_client(certs):
    cfg = TlsServerConfig(cert_file=certs.server_cert, key_file=certs.server_key)
    server = Served(Limits(max_message_bytes=1 << 20), tls.server_ssl_context(cfg, alpn=["h2"]))
    try:
        credentials = grpc.ssl_channel_credentials(open(certs.ca_file, "rb").read())
        with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
            channel.unary_unary(METHOD)(b"secret", timeout=5)
        assert server.received == [b"secret"]
    finally:
        server.close()



def _frames_until_closed(sock: socket.socket, seconds: float) -> list[Frame]:
    """The frames the server sends until it closes the connection (or `seconds` pass)."""
    data = bytearray()
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    frames = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        if len(data) < 9 + length:
            break
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        del data[:9 + length]
    return frames


def test_an_endless_header_block_is_cut_off_near_twice_the_header_list_limit():
    """h2 keeps a header block's raw frames until END_HEADERS and checks max_header_list_size only
    on the finished block: without a bound of its own a peer parks up to 64 frames of 1 MiB."""
    server = Served(Limits(max_message_bytes=1 << 20, max_header_list_size=16 << 10, idle_timeout=10.0))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as rogue:
            grpc_raw.endless_header_block(rogue, 8, 16 << 10)  # 128 KiB of a block allowed 32 KiB
            frames = _frames_until_closed(rogue, 5.0)
        goaway = [frame for frame in frames if isinstance(frame, GoAwayFrame)]
        assert goaway and goaway[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:  # others are still served
            channel.unary_unary(METHOD)(b"after", timeout=5, metadata=[("big", "x" * (12 << 10))])
        assert server.received == [b"after"]
    finally:
        server.close()


def test_one_stream_over_the_concurrency_limit_is_refused_and_the_others_complete():
    """grpc-go refuses the stream beyond max_concurrent_streams with RST_STREAM(REFUSED_STREAM),
    which clients retry transparently; a GOAWAY would cancel every call on the connection."""
    server = Served(Limits(max_message_bytes=1 << 20, max_concurrent_streams=2), delay=0.3)
    try:
        client = H2Client(server.port)
        streams = [client.start() for _ in range(3)]  # opened before the server's SETTINGS are read
        for index, stream in enumerate(streams):
            client.h2.send_data(stream, struct.pack(">BI", 0, 1) + bytes([index]), end_stream=True)
        client.flush()
        events = client.events(lambda seen: all(_status(seen, stream) is not None for stream in streams[:2]))
        assert [_status(events, stream) for stream in streams[:2]] == ["0", "0"]
        resets = [event for event in events if isinstance(event, h2.events.StreamReset)]
        assert [(reset.stream_id, reset.error_code) for reset in resets] == \
            [(streams[2], h2.errors.ErrorCodes.REFUSED_STREAM)]
        assert not any(isinstance(event, h2.events.ConnectionTerminated) for event in events)
        again = client.start()  # the connection is still up
        client.h2.send_data(again, struct.pack(">BI", 0, 2) + b"ok", end_stream=True)
        client.flush()
        assert _status(client.events(lambda seen: _status(seen, again) is not None), again) == "0"
        assert sorted(server.received) == [b"\x00", b"\x01", b"ok"]
    finally:
        server.close()


def test_a_header_list_over_the_limit_resets_its_stream_alone_and_the_calls_in_flight_complete():
    """h2 ended the connection with GOAWAY for one call's oversized metadata: every call in flight
    on it failed with UNAVAILABLE, which clients retry, and the oversized call, retried, did it
    again. grpc-go resets that stream alone (FRAME_SIZE_ERROR: INTERNAL, not retried). The block is
    still decoded to its end: the next call's headers refer to table entries it added."""
    server = Served(Limits(max_message_bytes=1 << 20, max_header_list_size=16 << 10), delay=0.5)
    try:
        client = H2Client(server.port)
        client.events(lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
        in_flight = [client.start() for _ in range(2)]
        for stream in in_flight:
            client.h2.send_data(stream, struct.pack(">BI", 0, 2) + b"ok", end_stream=True)
        client.flush()
        time.sleep(0.1)  # both calls are in the handler
        oversized = client.start(metadata=(("big", "x" * (20 << 10)), ("tenant", "past-the-limit")))
        after = client.start(metadata=(("tenant", "past-the-limit"),))  # an index into the table, on the wire
        client.h2.send_data(after, struct.pack(">BI", 0, 5) + b"after", end_stream=True)
        client.flush()
        events = client.events(lambda seen: all(_status(seen, stream) is not None for stream in [*in_flight, after]))
        assert [_status(events, stream) for stream in [*in_flight, after]] == ["0", "0", "0"]
        resets = [(event.stream_id, event.error_code) for event in events if isinstance(event, h2.events.StreamReset)]
        assert resets == [(oversized, h2.errors.ErrorCodes.FRAME_SIZE_ERROR)]
        assert not any(isinstance(event, h2.events.ConnectionTerminated) for event in events)
        assert server.metadata[-1]["tenant"] == "past-the-limit"
    finally:
        server.close()


def test_grpcio_metadata_over_64_kib_is_served_beside_a_concurrent_call():
    """grpc-go takes header lists up to 16 MiB; 64 KiB refused auth tokens and baggage it accepts."""
    server = Served(Limits(max_message_bytes=1 << 20), delay=0.3)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = channel.unary_unary(METHOD)
            small = call.future(b"small", timeout=5)
            assert call(b"large", timeout=5, metadata=[("big", "x" * (200 << 10))]) == b""
            with pytest.raises(grpc.RpcError) as refused:  # over 256 KiB: INTERNAL, as from grpc-go over its limit
                call(b"too large", timeout=5, metadata=[("big", "x" * (384 << 10))])
            assert refused.value.code() == grpc.StatusCode.INTERNAL
            assert small.result() == b""
        assert sorted(server.received) == [b"large", b"small"]
    finally:
        server.close()


def test_calls_holding_more_metadata_than_the_connection_window_are_answered_unavailable():
    """Each call keeps its metadata while it runs: with 1024 streams of 256 KiB lists a connection
    could hold 256 MiB. Beyond the connection window (what its DATA may take) a call is refused."""
    server = Served(Limits(max_message_bytes=1 << 20, max_header_list_size=16 << 10, connection_window=64 << 10,
                           stream_window=16 << 10), delay=0.5)
    try:
        client = H2Client(server.port)
        client.events(lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
        streams = [client.start(metadata=(("big", str(index) * (12 << 10)),)) for index in range(6)]
        for stream in streams:
            client.h2.send_data(stream, struct.pack(">BI", 0, 2) + b"ok", end_stream=True)
        client.flush()
        events = client.events(lambda seen: all(_status(seen, stream) is not None for stream in streams))
        statuses = [_status(events, stream) for stream in streams]
        assert statuses == ["0"] * 5 + [str(grpc_call.UNAVAILABLE)]
        again = client.start(metadata=(("big", "y" * (12 << 10)),))  # the finished calls gave theirs back
        client.h2.send_data(again, struct.pack(">BI", 0, 2) + b"ok", end_stream=True)
        client.flush()
        assert _status(client.events(lambda seen: _status(seen, again) is not None), again) == "0"
    finally:
        server.close()


def _opening(client: H2Client, stream: int, content_type: str) -> bytes:
    """A HEADERS frame that opens `stream`, written by hand: the client's h2 would hold a stream
    back for the advertised limit."""
    block = client.h2.encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", METHOD),
                                      (":authority", "127.0.0.1"), ("content-type", content_type)])
    return HeadersFrame(stream, block, flags=["END_HEADERS"]).serialize()


@pytest.mark.parametrize("then", ["reset", "reset-and-open-another"])
@pytest.mark.parametrize("refusal", ["not-grpc", "over-the-stream-limit"])
def test_a_stream_reset_in_the_write_that_opens_it_leaves_the_calls_in_flight_on_the_connection(refusal, then,
                                                                                                caplog):
    """A stream the server refuses (no gRPC content type, beyond max_concurrent_streams) and the
    peer resets in the same write is closed by the time its HEADERS are handled (and forgotten by
    h2 once a later stream opens): answering it raised out of data_received, and asyncio cut the
    whole connection, with every call in flight on it, and logged a traceback for each (a cheap
    way to flood the log)."""
    streams = 2 if refusal == "over-the-stream-limit" else 4  # two calls in flight in either case
    server = Served(Limits(max_message_bytes=1 << 20, max_concurrent_streams=streams), delay=0.5)
    try:
        client = H2Client(server.port)
        client.events(lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
        in_flight = [client.start() for _ in range(2)]
        for stream in in_flight:
            client.h2.send_data(stream, struct.pack(">BI", 0, 2) + b"ok", end_stream=True)
        client.flush()
        time.sleep(0.1)  # both calls are in the handler
        rogue = client.h2.get_next_available_stream_id()
        content_type = "text/plain" if refusal == "not-grpc" else "application/grpc"
        frames = _opening(client, rogue, content_type) + RstStreamFrame(rogue, error_code=8).serialize()
        if then == "reset-and-open-another":
            frames += _opening(client, rogue + 2, content_type) + RstStreamFrame(rogue + 2, error_code=8).serialize()
        client.sock.sendall(frames)
        events = client.events(lambda seen: all(_status(seen, stream) is not None for stream in in_flight))
        assert [_status(events, stream) for stream in in_flight] == ["0", "0"]
        assert not any(isinstance(event, h2.events.ConnectionTerminated) for event in events)
        assert "data_received() call failed" not in caplog.text
    finally:
        server.close()


def test_a_stream_to_refuse_that_comes_with_the_peers_goaway_is_dropped_quietly(served, caplog):
    """The peer's GOAWAY in the same write closes the connection for h2 before the stream's
    HEADERS are handled: the refusal has nothing to go out on (it raised out of data_received)."""
    client = H2Client(served.port)
    client.events(lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
    client.sock.sendall(_opening(client, 1, "text/plain") + GoAwayFrame(0, last_stream_id=0).serialize())
    client.events(lambda seen: False, deadline=0.5)
    assert "data_received() call failed" not in caplog.text


@pytest.mark.parametrize("module", ["edgeagent.receivers.grpc_connection", "edgeagent.exporters.grpc_client"])
def test_h2_frames_stay_out_of_the_logs_wherever_h2_is_first_imported(module):
    code = ("import logging, sys\n"
            f"import {module}\n"
            "from hyperframe.frame import DataFrame\n"
            "assert logging.getLogger('h2').level == logging.getLogger('hpack').level == logging.WARNING\n"
            "assert '<70000 bytes>' in repr(DataFrame(1, data=b'x' * 70000))\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


def test_answers_waiting_for_the_connections_window_go_on_as_it_opens():
    """Three answers of 300 kB, their streams' windows 1 MiB and the connection's 64 KiB: each
    WINDOW_UPDATE for the connection lets the waiting answers go on until it closes again."""
    server = Served(Limits(max_message_bytes=1 << 20))
    try:
        client = H2Client(server.port)
        client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        streams = [client.start("/large/Answer") for _ in range(3)]
        for index, stream in enumerate(streams):
            client.h2.send_data(stream, struct.pack(">BI", 0, index + 1) + b"x" * (index + 1), end_stream=True)
        client.flush()
        received = dict.fromkeys(streams, b"")
        read = 0

        def answered(events: list[h2.events.Event]) -> bool:
            nonlocal read
            for event in events[read:]:
                if isinstance(event, h2.events.DataReceived):
                    received[event.stream_id] += event.data
                    client.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            read = len(events)
            client.flush()
            return all(_status(events, stream) is not None for stream in streams)

        events = client.events(answered, deadline=10.0)
        assert [_status(events, stream) for stream in streams] == ["0", "0", "0"]
        assert [received[stream] for stream in streams] == \
            [struct.pack(">BI", 0, 300_000) + bytes([index + 1]) * 300_000 for index in range(3)]
    finally:
        server.close()


def test_an_answer_waiting_for_its_streams_window_goes_on_when_the_peer_raises_the_initial_window():
    """SETTINGS_INITIAL_WINDOW_SIZE changes every stream's window at once, with no WINDOW_UPDATE:
    an answer that waited for a window of 0 waited for ever when the peer opened it that way."""
    server = Served(Limits(max_message_bytes=1 << 20))
    try:
        client = H2Client(server.port)
        client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        client.h2.increment_flow_control_window(1 << 20)  # the connection's window stays open
        stream = client.start("/large/Answer")
        client.h2.send_data(stream, struct.pack(">BI", 0, 1) + b"x", end_stream=True)
        client.flush()
        client.events(lambda seen: any(isinstance(event, h2.events.ResponseReceived) for event in seen))
        client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        client.flush()
        events = client.events(lambda seen: _status(seen, stream) is not None)
        assert _status(events, stream) == "0"
        data = b"".join(event.data for event in events if isinstance(event, h2.events.DataReceived))
        assert data == struct.pack(">BI", 0, 300_000) + b"\x01" * 300_000
    finally:
        server.close()
