"""OTLP encodings for receivers: protobuf and the OTLP/JSON mapping, compression, size limits.

OTLP/JSON differs from protobuf's generic JSON mapping in one important way: trace and
span ids are hex strings, not base64. Enum values may be integers or names; both parse.
A key given twice in one object is read as otelcol's pdata reads it (see `_object`).
"""

from __future__ import annotations

import base64
import functools
import json
import sys
import weakref
import zlib
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

import zstandard
from google.protobuf.message import DecodeError, Message

from edgeagent.errors import BadRequestError
from edgeagent.receivers import deprecated, utf8
from edgeagent.signals import Metadata, Payload, Signal
from otel import ids, otlpjson
from otel.ids import invalid_id
from otel.otlpjson import ID_FIELDS, message_to_dict  # snake_case keys are made camelCase first (_object)

if TYPE_CHECKING:
    from google.protobuf.descriptor import Descriptor

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CHUNK = 64 * 1024


def metadata_of(pairs: Any) -> Metadata:
    """Request metadata with lowercased keys; repeated keys are joined with ';' as otelcol does
    (and kept apart for the batch processor's metadata_keys)."""
    out = Metadata()
    for key, value in pairs:
        if isinstance(value, str):  # not binary gRPC metadata
            out.add(key.lower(), value)
    return out


def decode(signal: Signal, body: bytes, content_type: str, metadata: dict[str, str] | None = None,
           client_address: str = "") -> Payload:
    """Parse a request body into a payload; raises BadRequestError(400) for malformed data."""
    payload = _decode(signal, body, content_type, metadata)
    wrong = invalid_id(signal.label, payload.message, payload.items, payload.raw)
    if wrong is not None:  # pdata refuses it: otelcol answers 400, and an otelcol upstream would too
        raise BadRequestError(f"request body is not a valid {signal.request_class.__name__}: {wrong}")
    payload.client_address = client_address
    return payload


def _decode(signal: Signal, body: bytes, content_type: str, metadata: dict[str, str] | None) -> Payload:
    if content_type == PROTOBUF:
        try:
            payload = Payload.from_bytes(signal, body, metadata)
        except (DecodeError, ValueError) as exc:
            descriptor = cast("Descriptor", signal.request_class.DESCRIPTOR)
            fixed = utf8.repaired(descriptor, body) if "utf-8" in str(exc).lower() else None
            if fixed is not None:  # otelcol keeps strings that are not UTF-8: keep the request too
                return _decode(signal, fixed, content_type, metadata)
            raise BadRequestError(
                f"request body is not a valid {signal.request_class.__name__} protobuf: {exc}"
            ) from exc
        if not payload.items and deprecated.TAG in body:  # an SDK's from before OTLP 0.15 (deprecated.py)
            migrated = deprecated.migrated(body)
            return payload if migrated is body else Payload.from_bytes(signal, migrated, metadata)
        return payload
    try:
        document = _loads(body)
    except ValueError as exc:  # not UTF-8, not JSON, or an integer longer than Python reads from text
        raise BadRequestError(f"request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise BadRequestError("request body is JSON nested too deeply") from None
    if document is None:  # pdata reads a top-level `null` as a request without fields: otelcol answers 200
        document = {}
    if not isinstance(document, dict):
        raise BadRequestError("request body must be a JSON object")
    try:
        _hex_ids_to_base64(document)
        message = signal.request_class()
        _json_parse()(document, message)
    except (ValueError, TypeError) as exc:
        raise BadRequestError(f"request body is not valid OTLP/JSON for {signal.label}: {exc}") from exc
    except RecursionError:  # deeper than the interpreter's stack, though json.loads took it
        raise BadRequestError(f"request body is OTLP/JSON for {signal.label} nested too deeply") from None
    return Payload.from_message(signal, message, metadata)


def load_ahead() -> None:
    """What a first request needs that the start did not load (the message classes, the id check's
    lite types, the JSON parser, the refusals' status messages), loaded as soon as the agent is
    ready rather than by that request: an agent at its open-file limit could not import them for
    the first request after a descriptor came free, which got a 500 (not retried by clients)."""
    from google.protobuf import duration_pb2  # noqa: F401  - refusals' RetryInfo (receivers/otlp_grpc.py)
    from google.rpc import error_details_pb2, status_pb2  # noqa: F401  - refusals' Status

    for signal in Signal:
        signal.request_class  # noqa: B018  - imports the message modules
    ids.prepare()
    _json_parse()
    otlpjson.message_to_dict(Signal.TRACES.response_class())  # protobuf's JSON mapping


@functools.cache
def _json_parse() -> Callable[[dict[str, Any], Message], None]:
    """The OTLP/JSON parser (json_parse.py), imported with the first JSON request."""
    from edgeagent.receivers import json_parse

    return json_parse.parse


def _loads(body: bytes | str) -> Any:
    """The body's first JSON value: what follows it is ignored, as pdata's iterator stops after
    the object (a C client may count its string's NUL terminator in the body). Text that is not
    UTF-8 is kept, U+FFFD for each invalid sequence, as pdata keeps such strings (see utf8)."""
    try:
        return json.loads(body, object_pairs_hook=_object)
    except UnicodeDecodeError:
        assert isinstance(body, bytes)  # a str has been decoded already
        return _loads(body.decode(errors="replace"))
    except json.JSONDecodeError as exc:
        if not exc.msg.startswith("Extra data"):
            raise
        return json.loads(exc.doc[:exc.pos], object_pairs_hook=_object)


# message fields that are members of a oneof: pdata starts a new one each time (SetEmpty...)
_ONEOF_MESSAGES = frozenset({"gauge", "sum", "histogram", "exponentialHistogram", "summary",
                             "arrayValue", "kvlistValue"})


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as pdata's unmarshaler reads it, where json.loads would keep only the last
    of a repeated key: snake_case keys are the camelCase field, and a field given twice appends
    (lists), merges (messages) or keeps the last (scalars, oneof members). A null in a list is an
    empty message, as pdata reads it (json_format refuses it; in a list of numbers both refuse it)."""
    document = dict(pairs)
    if len(document) != len(pairs) or "_" in "".join(document):  # the usual object has neither
        document = {}
        for key, value in pairs:
            key = _camel(key)
            document[key] = _again(key, document[key], value) if key in document else value
    for key, value in document.items():
        if type(value) is list and None in value:
            document[key] = [{} if item is None else item for item in value]
    return document


def _again(key: str, first: Any, second: Any) -> Any:
    if isinstance(first, list) and isinstance(second, list):
        return first + second
    if isinstance(first, dict) and isinstance(second, dict) and key not in _ONEOF_MESSAGES:
        merged = dict(first)
        for name, value in second.items():
            merged[name] = _again(name, merged[name], value) if name in merged else value
        return merged
    if second is None and isinstance(first, (list, dict)):
        return first  # pdata reads null as an empty list or message: nothing to add
    return second


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def encode_response(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return json.dumps(message_to_dict(message)).encode()
    return message.SerializeToString()


def success_response(content_type: str) -> bytes:
    """The answer to a request kept whole, as otelcol's: partial_success present and empty
    (protobuf `0a 00`, JSON `{"partialSuccess": {}}`), the same for the three signals (field 1
    of each Export*ServiceResponse). Written out, not encoded: the receivers make it as they
    start, which then needs none of protobuf's runtime (signals.py)."""
    return _SUCCESS[content_type]


_SUCCESS = {PROTOBUF: b"\n\x00", JSON: json.dumps({"partialSuccess": {}}).encode()}


def _hex_ids_to_base64(node: Any) -> None:
    """Rewrite OTLP/JSON hex ids in place to the base64 that protobuf's JSON parser expects."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_FIELDS and isinstance(value, str):
                node[key] = _hex_to_base64(key, value)
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)


def _hex_to_base64(key: str, value: str) -> str:
    if value == "":
        return ""
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise ValueError(f"{key} {value!r} is not a hex string") from exc
    expected = 8 if "span" in key.lower() else 16
    if len(raw) != expected:
        raise ValueError(f"{key} must be {expected} bytes ({expected * 2} hex digits), got {len(raw)}")
    return base64.b64encode(raw).decode()


def decompress(encoding: str, body: bytes, limit: int, on_output: Callable[[int], None] | None = None) -> bytes:
    decompressor = Decompressor(encoding, limit, on_output)
    decompressor.feed(body)
    return decompressor.finish()


class Decompressor:
    """Decodes a request body as it arrives, whatever otelcol's confighttp accepts, with a hard limit.

    The limit counts decompressed bytes actually produced, never a size a header declares, so a
    bomb stops at the limit (413). Every gzip member, zlib stream, zstd, snappy and lz4 frame of
    a body is decoded: concatenated streams are legal, and keeping only the first would answer
    OK for data that was dropped. Truncated or trailing garbage is a 400.

    Its stream (the decoder, whose window is as large as a frame asks: up to 8 MiB for zstd) reaches
    it through a weak proxy, so the two make no reference cycle: both are freed the moment the
    request lets go of them, finished, refused or abandoned by a client gone mid-body. In a cycle
    they waited for the cycle collector, which a serving agent runs after 50,000 surviving objects
    (lean.py), about 2,500 requests: 150 zstd requests of 300 kB held 60 MiB until then.
    """

    def __init__(self, encoding: str, limit: int, on_output: Callable[[int], None] | None = None):
        """`on_output(size)` hears of every piece of output (size: decoded bytes so far) as it is
        produced, so a memory budget grows with it; whatever it raises stops the decoding."""
        self.encoding = encoding.strip().lower()
        factory = _STREAMS.get(self.encoding)
        if factory is None:  # confighttp's newBodyReader: 400, as is a list of several encodings
            raise BadRequestError(f"unsupported Content-Encoding {encoding!r}; use one of "
                                  f"{', '.join(name for name in _STREAMS if name not in ('', 'none'))} or none")
        self.limit = limit
        self.size = 0  # decompressed bytes produced so far
        self._on_output = on_output
        self._parts: list[bytes] = []
        self._stream = factory(weakref.proxy(self))

    def feed(self, chunk: bytes) -> None:
        self._run(self._stream.feed, chunk)

    def finish(self) -> bytes:
        self._run(self._stream.finish)
        body = b"".join(self._parts)
        self._parts.clear()
        return body

    def _run(self, step: Callable[..., None], *args: bytes) -> None:
        try:
            step(*args)
        except _decode_errors() as exc:
            self._drop()
            raise BadRequestError(f"request body is not valid {self.encoding} data: {exc}") from exc
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        """Free what was decoded now: an error's traceback keeps this object alive until the
        cycle collector runs, and a refused bomb would hold the limit's worth of memory till then."""
        self._parts.clear()
        self._stream = _Identity(weakref.proxy(self))

    def room(self) -> int:
        """Bytes that may still be produced, plus one to notice going over."""
        return self.limit - self.size + 1

    def add(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self.limit:
            raise BadRequestError(f"request body exceeds the limit of {self.limit} bytes once decompressed", status=413)
        if self._on_output is not None:
            self._on_output(self.size)
        self._parts.append(data)


class _Stream(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...


class _Identity:
    def __init__(self, sink: Decompressor):
        self.sink = sink

    def feed(self, chunk: bytes) -> None:
        self.sink.add(chunk)

    def finish(self) -> None:
        pass


class _Zlib:
    """gzip (wbits 31) or zlib (wbits 15): one member after another. Raw deflate is accepted for
    zlib too, a leniency (otelcol's zlib.NewReader refuses it), told apart by a stream's first two
    bytes whatever the chunks the body arrives in."""

    def __init__(self, sink: Decompressor, wbits: int):
        self.sink = sink
        self.wbits = wbits
        self._z = zlib.decompressobj(wbits)
        self._fresh = True  # nothing of the current member decoded yet
        self._head = b""  # a stream's first byte, kept until the second tells zlib from raw deflate
        self._empty = True  # no byte received at all

    def feed(self, chunk: bytes) -> None:
        data = self._head + chunk if self._head else chunk
        self._head = b""
        self._empty = self._empty and not data
        while data or not self._fresh:
            if self.wbits == zlib.MAX_WBITS and self._fresh:
                if len(data) < 2:  # choosing now would make the answer depend on how the body was cut
                    self._head = data
                    return
                if not _looks_like_zlib(data):
                    self._z = zlib.decompressobj(-zlib.MAX_WBITS)  # HTTP's "deflate" is sometimes sent raw
            self._fresh = False
            # output in pieces of at most _CHUNK: no allocation is larger, and going over the limit
            # is noticed one piece after it, whatever the stream would still expand to
            piece = min(_CHUNK, self.sink.room())
            out = self._z.decompress(data, piece)
            self.sink.add(out)
            if self._z.eof:
                data = self._z.unused_data
                self._z = zlib.decompressobj(self.wbits)
                self._fresh = True
                continue
            data = self._z.unconsumed_tail
            if not data and len(out) < piece:
                return  # all input taken and no output pending: wait for more

    def finish(self) -> None:
        if self._empty:  # no stream at all: Go's gzip.NewReader and zlib.NewReader fail (EOF), otelcol's 400
            raise zlib.error("the body is empty: no compressed stream")
        if not self._fresh or self._head:
            raise zlib.error("the body ends inside a compressed stream (truncated)")


def _looks_like_zlib(data: bytes) -> bool:
    return data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


class _Framed:
    """Input cut into the format's own units (frame headers, blocks, chunks) as they complete.

    A subclass says how long the next unit is (`_unit`, None while incomplete) and what to do with
    it (`_take`); the body must end on a frame boundary, else it was truncated.
    """

    def __init__(self, sink: Decompressor):
        self.sink = sink
        self._buffer = bytearray()
        self._boundary = True  # between frames

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while self._buffer:
            size = self._unit(self._buffer)
            if size is None or size > len(self._buffer):
                return
            unit = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._take(unit)

    def finish(self) -> None:
        if self._buffer or not self._boundary:
            raise _Truncated(f"the body ends inside a frame ({len(self._buffer)} bytes left over)")

    def _unit(self, data: bytearray) -> int | None:
        raise NotImplementedError

    def _take(self, unit: bytes) -> None:
        raise NotImplementedError


class _Truncated(ValueError):
    pass


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _skippable_frame(data: bytearray, name: str) -> int:
    """Length of the skippable frame (zstd and lz4 share them) at the start of `data`."""
    if data[0] & 0xF0 == 0x50 and data[1:4] == b"\x2a\x4d\x18":
        return 8 + int.from_bytes(data[4:8], "little")
    raise _Corrupt(f"not a {name} frame")


class _Zstd(_Framed):
    """Frames decoded as they arrive through a writer whose sink counts every output chunk: a frame
    that declares no content size still stops at the limit. The unit scan finds frame ends, which
    the decoder does not report (a cut frame would pass silently)."""

    def __init__(self, sink: Decompressor):
        super().__init__(sink)
        # the window a frame may ask for is bounded too (8 MiB covers every level up to 19, which
        # otelcol's and most encoders' defaults stay within), else a decoder's memory outgrows the limit
        window = 1 << max(23, min(27, sink.limit.bit_length()))
        self._decoder = zstandard.ZstdDecompressor(max_window_size=window)
        self._writer: Any = None
        self._checksum = False  # the frame ends with a 4-byte checksum
        self._last_block = False

    def _unit(self, data: bytearray) -> int | None:
        if self._boundary:  # a frame header, or a whole skippable frame
            if len(data) < 8:
                return None
            if data[:4] != _ZSTD_MAGIC:
                return _skippable_frame(data, "zstd")
            descriptor = data[4]
            single = descriptor >> 5 & 1
            content_size = (single, 2, 4, 8)[descriptor >> 6]
            return 5 + (1 - single) + (0, 1, 2, 4)[descriptor & 3] + content_size
        if self._last_block:
            return 4
        if len(data) < 3:
            return None
        header = int.from_bytes(data[:3], "little")
        kind, size = header >> 1 & 3, header >> 3
        if kind == 3:
            raise _Corrupt("reserved zstd block type")
        return 3 + (1 if kind == 1 else size)

    def _take(self, unit: bytes) -> None:
        if self._boundary:
            if unit[:4] != _ZSTD_MAGIC:
                return  # a skippable frame carries no data
            self._boundary = False
            self._checksum = bool(unit[4] >> 2 & 1)
            self._writer = self._decoder.stream_writer(cast(IO[bytes], _Sink(self.sink)), write_size=_CHUNK)
            self._writer.write(unit)
            return
        self._writer.write(unit)
        if self._last_block:  # that was the checksum after the last block
            self._end_frame()
        elif unit[0] & 1:  # the last block
            if self._checksum:
                self._last_block = True
            else:
                self._end_frame()

    def _end_frame(self) -> None:
        self._writer.flush()
        self._writer = None
        self._boundary = True
        self._last_block = False


class _Sink:
    """The file-like object python-zstandard writes decompressed chunks into."""

    def __init__(self, sink: Decompressor):
        self.sink = sink

    def write(self, data: bytes) -> int:
        self.sink.add(bytes(data))
        return len(data)


class _Corrupt(ValueError):
    pass


_SNAPPY_STREAM = b"\xff\x06\x00\x00sNaPpY"
_SNAPPY_CHUNK = 65536  # the framing format's most uncompressed data in one chunk


class _SnappyFramed(_Framed):
    """The framing format, chunk by chunk: no chunk yields more than 64 KiB, so output grows in
    bounded steps; each chunk is checked (CRC) by decoding it behind a stream identifier."""

    def _unit(self, data: bytearray) -> int | None:
        if len(data) < 4:
            return None
        return 4 + int.from_bytes(data[1:4], "little")

    def _take(self, unit: bytes) -> None:
        kind = unit[0]
        if kind == 0xFF:
            if unit != _SNAPPY_STREAM:
                raise _Corrupt("bad snappy stream identifier")
            self._boundary = False
            return
        if self._boundary:
            raise _Corrupt("snappy data before the stream identifier")
        if kind in (0x00, 0x01):
            import cramjam  # with the first snappy or lz4 body (_decode_errors)

            if kind == 0x00 and cramjam.snappy.decompress_raw_len(unit[8:]) > _SNAPPY_CHUNK:
                raise _Corrupt("snappy chunk larger than 64 KiB")
            self.sink.add(bytes(cramjam.snappy.decompress(_SNAPPY_STREAM + unit)))
        elif kind < 0x80:
            raise _Corrupt(f"reserved unskippable snappy chunk type {kind:#x}")

    def finish(self) -> None:
        self._boundary = True  # a stream may end after any whole chunk
        super().finish()


class _Snappy:
    """otelcol's "snappy": the framing format when the body starts with its stream identifier,
    else one block, whose declared length must fit before it is decoded (and which the decoder
    then produces exactly)."""

    def __init__(self, sink: Decompressor):
        self.sink = sink
        self._framed: _SnappyFramed | None = None
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self._framed is not None:
            self._framed.feed(chunk)
            return
        self._buffer += chunk
        if len(self._buffer) >= len(_SNAPPY_STREAM) and self._buffer.startswith(_SNAPPY_STREAM):
            self._framed = _SnappyFramed(self.sink)
            self._framed.feed(bytes(self._buffer))
            self._buffer.clear()

    def finish(self) -> None:
        if self._framed is not None:
            self._framed.finish()
            return
        import cramjam

        block = bytes(self._buffer)
        if cramjam.snappy.decompress_raw_len(block) >= self.sink.room():
            raise BadRequestError(f"request body exceeds the limit of {self.sink.limit} bytes once decompressed",
                                  status=413)
        self.sink.add(bytes(cramjam.snappy.decompress_raw(block)))


_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_LZ4_BLOCK_MAX = {4: 64 << 10, 5: 256 << 10, 6: 1 << 20, 7: 4 << 20}


class _Lz4(_Framed):
    """LZ4 frames, collected whole and decoded only when the most their blocks can yield fits the
    room left plus one block (the size each block may reach, not a declared content size)."""

    def __init__(self, sink: Decompressor):
        super().__init__(sink)
        self._frame = bytearray()
        self._block_max = 0
        self._block_checksum = 0
        self._content_checksum = 0
        self._bound = 0
        self._ended = False  # end mark seen; the content checksum follows when flagged

    def _unit(self, data: bytearray) -> int | None:
        if self._boundary:
            if len(data) < 8:
                return None
            if data[:4] != _LZ4_MAGIC:
                return _skippable_frame(data, "lz4")
            flags = data[4]
            if flags >> 6 != 1:
                raise _Corrupt("unsupported lz4 frame version")
            return 7 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)
        if self._ended:
            return self._content_checksum
        if len(data) < 4:
            return None
        size = int.from_bytes(data[:4], "little") & 0x7FFFFFFF
        return 4 if size == 0 else 4 + size + self._block_checksum

    def _take(self, unit: bytes) -> None:
        if self._boundary:
            if unit[:4] != _LZ4_MAGIC:
                return  # a skippable frame carries no data
            self._boundary = False
            self._block_max = _LZ4_BLOCK_MAX.get(unit[5] >> 4 & 7, 0)
            if not self._block_max:
                raise _Corrupt("bad lz4 block maximum size")
            self._block_checksum = 4 if unit[4] & 0x10 else 0
            self._content_checksum = 4 if unit[4] & 0x04 else 0
            self._frame[:] = unit
            self._bound = 0
            return
        self._frame += unit
        if self._ended or (unit == b"\x00\x00\x00\x00" and not self._content_checksum):
            self._decode_frame()
        elif unit == b"\x00\x00\x00\x00":
            self._ended = True
        else:
            self._bound += self._block_max
            if self._bound - self._block_max >= self.sink.room():
                raise BadRequestError(f"request body exceeds the limit of {self.sink.limit} bytes once "
                                      "decompressed", status=413)

    def _decode_frame(self) -> None:
        import cramjam

        self.sink.add(bytes(cramjam.lz4.decompress(bytes(self._frame))))
        self._frame.clear()
        self._boundary = True
        self._ended = False


_STREAMS: dict[str, Callable[[Decompressor], _Stream]] = {
    "": _Identity,
    "identity": _Identity,
    "none": _Identity,
    "gzip": lambda sink: _Zlib(sink, 16 + zlib.MAX_WBITS),
    "x-gzip": lambda sink: _Zlib(sink, 16 + zlib.MAX_WBITS),
    "zlib": lambda sink: _Zlib(sink, zlib.MAX_WBITS),
    "deflate": lambda sink: _Zlib(sink, zlib.MAX_WBITS),
    "zstd": _Zstd,
    "snappy": _Snappy,
    "x-snappy-framed": _SnappyFramed,
    "lz4": _Lz4,
}
_DECODE_ERRORS: tuple[type[Exception], ...] = (zlib.error, zstandard.ZstdError, ValueError)


def _decode_errors() -> tuple[type[Exception], ...]:
    """With cramjam's error once cramjam is imported: it comes with the first snappy or lz4 body, as
    importing it cost every start 1 ms."""
    cramjam = sys.modules.get("cramjam")
    return _DECODE_ERRORS if cramjam is None else (*_DECODE_ERRORS, cramjam.DecompressionError)
