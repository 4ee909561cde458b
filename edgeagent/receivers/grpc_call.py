"""A gRPC call as its handler sees it, and how gRPC rides on HTTP/2 headers.

A handler (`Handler`) reads its call's one message with `GrpcCall.read`, decoded by codec's
bounded decoders as it arrives, and answers with the response message or ends the call with a
`GrpcError`; `Limits` bound what a server takes. The functions at the end read and write gRPC's
own headers: grpc-timeout, `-bin` metadata, the trailers that carry a status, and the answer to
a request that is no gRPC call. The connection that carries a call is grpc_connection.py's; a call
asks of it only `CallHost`. `quiet_h2()` quiets h2's frame logs, for the server and the client
(grpc_client.py) alike; each calls it when it imports h2.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from edgeagent.errors import BadRequestError
from edgeagent.receivers import codec

if TYPE_CHECKING:
    from hyperframe.frame import DataFrame


def quiet_h2() -> None:
    """h2 and hpack log every frame and header at debug level, tokens included: never let them
    through. And h2 formats repr(frame) for its trace log whether or not anything logs it, and
    hyperframe's repr of a DATA frame copies and hex-encodes the whole payload (a third of the
    server's CPU per message): it shows the payload's size instead."""
    from hyperframe.frame import DataFrame

    for name in ("h2", "hpack"):
        logging.getLogger(name).setLevel(logging.WARNING)
    DataFrame._body_repr = _data_frame_repr  # type: ignore[method-assign,assignment]


def _data_frame_repr(frame: DataFrame) -> str:
    return f"<{len(frame.data)} bytes>"


OK, CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 8, 12, 13, 14

DEADLINE_MESSAGE = "context deadline exceeded"  # grpc-go's words (Go's context.DeadlineExceeded)
ENCODINGS = ("identity", "gzip", "deflate", "zstd", "snappy")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
PREFIX = struct.Struct(">BI")  # a message's compressed flag and length
# grpc-go's words for a unary call's stream that ends without a message, or holds more than one
_NONE = "cardinality violation: received no request message from non-client-streaming RPC"
_MORE_THAN_ONE = "cardinality violation: received multiple request messages for non-client-streaming RPC"
_ACK_EVERY = 64 << 10  # flow-control credit is given back in pieces this large (or when a call waits)
_REQUEST_PSEUDO = frozenset({b":method", b":path", b":scheme", b":authority", b":protocol"})
_NOT_TOKEN = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")  # a header name is a lowercase token in HTTP/2
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # Go's httpguts: no control character but tab


class GrpcError(Exception):
    """Ends a call with this status; `trailers` are extra trailing metadata (`-bin` values as bytes)."""

    def __init__(self, code: int, message: str, trailers: Sequence[tuple[str, str | bytes]] = ()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = tuple(trailers)


@dataclass(frozen=True)
class Limits:
    """What the gRPC server allows a connection and its calls (the receiver's settings, grpc-go's defaults)."""

    max_message_bytes: int  # compressed on the wire and decoded, as grpc's max_recv_msg_size
    max_concurrent_streams: int = 1024
    max_header_list_size: int = 256 << 10  # grpc-go: 16 MiB; README says why not here
    stream_window: int = 1 << 20
    connection_window: int = 8 << 20
    max_frame_size: int = 1 << 20
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0  # grpc-go's max_connection_idle: no calls this long -> GOAWAY
    max_age: float = 0.0  # grpc-go's max_connection_age (0: none), ±10% so reconnects spread out
    age_grace: float = 0.0  # after max_age's GOAWAY, calls get this long (0: as long as they take)
    ping_after: float = 7200.0  # grpc-go's keepalive time: ping a peer silent this long...
    ping_timeout: float = 20.0  # ...and close its connection if it stays silent this long after
    min_ping_interval: float = 300.0  # enforcement_policy.min_time: closer pings are strikes
    pings_without_calls: bool = False  # enforcement_policy.permit_without_stream
    receive_buffer: int = 0  # the socket's SO_RCVBUF (read_buffer_size); 0: the system's
    send_buffer: int = 0  # the socket's SO_SNDBUF (write_buffer_size); 0: the system's


class CallHost(Protocol):
    """What a call asks of the connection that carries it (grpc_server.py's)."""

    limits: Limits

    def consumed(self, stream_id: int, size: int) -> None: ...


class GrpcCall:
    """One unary call as its handler sees it: method, metadata, peer, deadline, and the message to read.

    The server cancels the handler when the call's deadline (grpc-timeout) passes, and answers
    DEADLINE_EXCEEDED, until the handler takes the deadline over (`own_deadline`): from then on
    the handler answers for it, so work that cannot be undone (a commit) ends with its outcome."""

    def __init__(self, connection: CallHost, stream_id: int, method: str, metadata: list[tuple[str, str | bytes]],
                 encoding: str, peer: str, deadline: float | None = None):
        self.method = method
        self.metadata = metadata  # lowercased keys, no pseudo or transport headers; `-bin` values decoded
        self.encoding = encoding
        self.peer = peer
        self.deadline = deadline  # the event loop's time by which the client wants its answer
        self._owned = False  # the handler answers for the deadline
        self.expired = False  # the deadline passed while the server still answered for it
        self._connection = connection
        self._stream_id = stream_id
        self._chunks: list[bytes] = []
        self._unacknowledged = 0  # bytes taken but not yet given back to flow control
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    def own_deadline(self) -> float | None:
        """Take the deadline over: the server no longer cancels the call when it passes, the handler
        honours it in whatever it still waits for (the deadline is returned). Raises DEADLINE_EXCEEDED
        if it has passed already, so that nothing is begun that the client has given up on."""
        if self.deadline is not None and (self.expired or asyncio.get_running_loop().time() >= self.deadline):
            raise GrpcError(DEADLINE_EXCEEDED, DEADLINE_MESSAGE)
        self._owned = True
        return self.deadline

    def _expire(self, task: asyncio.Task[None]) -> None:
        """The deadline passed: cancel the handler, unless it answers for the deadline itself."""
        if not self._owned and not task.done():
            self.expired = True
            task.cancel()

    def _push(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _next(self) -> bytes | None:
        while not self._chunks:
            if self._unacknowledged:
                self._connection.consumed(self._stream_id, self._unacknowledged)
                self._unacknowledged = 0
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunk = self._chunks.pop(0)
        self._unacknowledged += len(chunk)
        if self._unacknowledged >= _ACK_EVERY:
            self._connection.consumed(self._stream_id, self._unacknowledged)
            self._unacknowledged = 0
        return chunk

    async def read(self, on_size: Callable[[int], None] | None = None) -> bytes:
        """The call's one message, decoded; `on_size(n)` hears the bytes held so far (received,
        then decoded) as they grow, and whatever it raises ends the call. A message over the limit
        once decompressed is refused in grpc-go's words, by which a sender (otelcol's, or the
        agent's own exporter) knows that a smaller one gets through."""
        try:
            return await self._read(on_size)
        except BadRequestError as exc:  # the decoder's: 413 is a message over the limit
            if exc.status != 413:
                raise
            limit = self._connection.limits.max_message_bytes
            raise GrpcError(RESOURCE_EXHAUSTED,
                            f"grpc: received message after decompression larger than max {limit}") from None

    async def _read(self, on_size: Callable[[int], None] | None) -> bytes:
        prefix = bytearray()  # until the 5-byte message prefix is complete
        decoder: codec.Decompressor | None = None
        wanted = body = received = 0
        while (chunk := await self._next()) is not None:
            received += len(chunk)
            if on_size is not None:
                on_size(received)
            if decoder is None:
                prefix += chunk
                if len(prefix) < PREFIX.size:
                    continue
                decoder, wanted = self._start(bytes(prefix[:PREFIX.size]), on_size)
                chunk = bytes(prefix[PREFIX.size:])
            body += len(chunk)
            if body > wanted:
                raise GrpcError(INTERNAL, _MORE_THAN_ONE)
            if chunk:
                decoder.feed(chunk)
        if decoder is None and not prefix:
            raise GrpcError(INTERNAL, _NONE)
        if decoder is None or body < wanted:  # the stream ended within the prefix or the message
            raise GrpcError(INTERNAL, "unexpected EOF")
        return decoder.finish()

    def _start(self, prefix: bytes, on_size: Callable[[int], None] | None) -> tuple[codec.Decompressor, int]:
        limit = self._connection.limits.max_message_bytes
        flag, length = PREFIX.unpack_from(prefix)
        if length > limit:
            raise GrpcError(RESOURCE_EXHAUSTED, f"received message larger than max ({length} vs. {limit})")
        if flag > 1:
            raise GrpcError(INTERNAL, f"invalid compressed flag {flag}")
        if flag and self.encoding in ("", "identity"):
            raise GrpcError(INTERNAL, "compressed flag set with identity or empty encoding")
        return codec.Decompressor(self.encoding if flag else "identity", limit, on_size), length


Handler = Callable[[GrpcCall], Awaitable[bytes]]


def not_grpc(headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]] | None:
    """grpc-go's answer to a request that is no gRPC call (None for one that is): 405 for a method
    but POST, 415 for a content type but application/grpc, +proto and the like, or ;parameters
    (grpc-web reads its status from the body, so it must not be served as gRPC)."""
    content_type = headers.get(b"content-type", b"")
    if headers.get(b":method") != b"POST":
        status, code, message = b"405", INTERNAL, "invalid gRPC request method"
    elif content_type != b"application/grpc" and not content_type.startswith((b"application/grpc+",
                                                                               b"application/grpc;")):
        shown = content_type.decode("latin-1")
        status, code, message = b"415", INVALID_ARGUMENT, f"invalid gRPC request content-type {_go_quote(shown)}"
    else:
        return None
    return trailers_only(code, message, status)


def malformed(fields: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether grpc-go resets a request's stream for its header fields (PROTOCOL_ERROR, the
    connection's other calls going on), as Go's HTTP/2 framer and gRPC's A41 refuse them: a control
    character in a value (a space or tab anywhere is fine), a name that is no lowercase token, a
    `connection` field, or a pseudo-header unknown, repeated, or after a regular field. h2's own
    checks, which end the whole connection and refuse more (RFC 9113's whitespace at a value's
    ends, any `te` but trailers, a missing :scheme), are off."""
    seen: set[bytes] = set()
    regular = False
    for name, value in fields:
        if _CONTROL.search(value):
            return True
        if name[:1] == b":":
            if regular or name not in _REQUEST_PSEUDO or name in seen:
                return True
            seen.add(name)
        elif not name or _NOT_TOKEN.search(name) or name == b"connection":
            return True
        else:
            regular = True
    return False


def unknown_authority(fields: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | None:
    """grpc-go's answer (400, INTERNAL) to a call that has no :authority nor host, or more than one
    host (A41); None for one it serves, whose host, if it has both, is ignored."""
    authorities = sum(1 for name, _ in fields if name == b":authority")
    hosts = sum(1 for name, _ in fields if name == b"host")
    if hosts > 1:
        message = (f"num values of :authority: {authorities}, num values of host: {hosts}, "
                   "both must only have 1 value as per HTTP/2 spec")
    elif not authorities and not hosts:
        message = "no host or :authority header present"
    else:
        return None
    return trailers_only(INTERNAL, message, b"400")


def trailers_only(code: int, message: str, status: bytes = b"200") -> list[tuple[bytes, bytes]]:
    """The one HEADERS frame of a call answered without a message: HTTP `status` and the call's."""
    return [(b":status", status), (b"content-type", b"application/grpc"), *status_trailers(code, message, ())]


def parse_timeout(value: bytes | None) -> float | None:
    """grpc-timeout ("100m", "5S"): seconds, None without one. Raises GrpcError for a value grpc-go
    refuses (up to 8 ASCII digits and a unit), with its words."""
    if value is None:
        return None
    text = value.decode("latin-1")
    digits, unit = text[:-1], _TIMEOUT_UNITS.get(text[-1:])
    quoted = _go_quote(text)
    if len(text) < 2:
        problem = f"transport: timeout string is too short: {quoted}"
    elif len(text) > 9:
        problem = f"transport: timeout string is too long: {quoted}"
    elif unit is None:
        problem = f"transport: timeout unit is not recognized: {quoted}"
    elif not (digits.isascii() and digits.isdigit()):
        problem = f"strconv.ParseUint: parsing {_go_quote(digits)}: invalid syntax"
    else:
        return int(digits) * unit
    raise GrpcError(INTERNAL, f"malformed grpc-timeout: {problem}")


def _go_quote(text: str) -> str:
    """Go's %q of printable text, in which grpc-go's messages quote a value."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unbase64(value: bytes) -> bytes:
    """A `-bin` metadata value: base64 with or without its padding (b"" if it is none)."""
    try:
        return base64.b64decode(value + b"=" * (-len(value) % 4))
    except ValueError:
        return b""


def status_trailers(code: int, message: str, extra: Sequence[tuple[str, str | bytes]]) -> list[tuple[bytes, bytes]]:
    out = [(b"grpc-status", str(code).encode())]
    if message:
        out.append((b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()))
    for key, value in extra:
        if isinstance(value, bytes):
            value = base64.b64encode(value).rstrip(b"=").decode() if key.endswith("-bin") else value.decode("latin-1")
        out.append((key.encode(), value.encode()))
    return out
