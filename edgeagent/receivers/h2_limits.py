"""Bounds the h2 library leaves to its user, for grpc_server.

h2 keeps a header block's raw frames (HEADERS, then CONTINUATION) until END_HEADERS and checks
SETTINGS_MAX_HEADER_LIST_SIZE only when HPACK decodes the finished block. SETTINGS_MAX_FRAME_SIZE
applies to every frame type, so with the 1 MiB frames DATA wants, a peer could park 64 frames of
1 MiB (h2's CONTINUATION_BACKLOG) a connection, before any call or auth exists. grpc-go decodes
headers as they arrive (x/net's readMetaFrame) and ends the connection with PROTOCOL_ERROR once
a fragment exceeds twice the header-list bytes still allowed; here the raw block is bounded to
twice the header list size, checked on each frame's 9-byte header, before its payload is buffered.

h2 handles every frame of a read in one go, and asyncio reads up to 256 KiB: 29,000 empty SETTINGS
frames, 200 ms of a loop every other connection shares (grpc-go serves each on a goroutine of its
own). The same buffer yields at most FRAMES_PER_TURN frames a call; the server takes the rest in
the loop's next turns, after the other connections' (grpc_connection: `_receive`). A header block
counts one more frame for each HEADER_BYTES_PER_FRAME bytes of it: its fields, one to three bytes
each, cost microseconds to decode and to read as a call's metadata, so that fifty blocks of 5,500
fields (each a list within the limit) were a second of one turn.

A finished block whose header list is over the limit fails its stream alone (HeaderListBound), as
grpc-go resets a truncated one: hpack stops at the limit and h2 ends the connection, every call
on it with it. The block is still decoded to its end, since the peer's later blocks refer to the
HPACK table entries it adds, but what lies beyond the limit is dropped as it is decoded. Decoding
costs a few microseconds a field, and a field may be one or two bytes of the block: a list within
the limit has at most one field per 32 bytes of it (RFC 9113 counts 32 more than a field's name
and value), so a block with more ends the connection (ENHANCE_YOUR_CALM, h2's answer to an HPACK
bomb) as soon as the count is passed, instead of holding the loop a second for 260,000 fields.

Answers are encoded by BoundedEncoder: hpack's Huffman coder builds one integer shifted once per
byte, time quadratic in a value's length, and an answer may name what a call sent (an unknown
method's 256 KiB :path is 1.5 MB percent-encoded, minutes of the loop); and its dynamic table
follows the peer's SETTINGS_HEADER_TABLE_SIZE, up to 4 GiB a connection of the values it keeps,
each change of which it signals in the next block (400,000 SETTINGS: 6 s, an 800 kB answer). The
encoder codes in linear time, keeps HPACK's default 4 KiB table whatever the peer allows, and
signals two changes of its size at most.

A request's content-length is not read (LengthBlindConnection), as grpc-go never reads it: h2
ended the connection when the DATA frames did not add up to it, and a proxy that forwards an
HTTP/1.1 request's length (grpc-web, a bridge) sends one that never does.

h2's connection refers to itself, through its table of frame handlers (bound methods), so a
closed connection, with its streams, buffers and HPACK tables, waited for the cycle collector,
which a serving agent runs rarely (lean.py): about 19 kB a connection, 11 MiB for 600 clients
that connect for each export. `release()` empties the table once the connection is closed.
"""

from __future__ import annotations

from collections.abc import Iterable

from h2.connection import AllowedStreamIDs, H2Connection
from h2.exceptions import ProtocolError
from h2.frame_buffer import FrameBuffer
from h2.stream import H2Stream
from hpack import Decoder, Encoder, HeaderTuple
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import table_entry_size
from hyperframe.frame import Frame, HeadersFrame, PushPromiseFrame

_HEADERS, _PUSH_PROMISE, _CONTINUATION = 0x1, 0x5, 0x9
FRAMES_PER_TURN = 100  # a millisecond or two of h2's work; a message's DATA comes in frames up to 1 MiB
HEADER_BYTES_PER_FRAME = 64  # of a header block: 20 to 60 fields, about as long to take as a frame
_FRAMING = 1024  # padding and priority fields a block's frames carry beyond its HPACK bytes


class HeaderBlockBound(FrameBuffer):
    """h2's FrameBuffer, refusing a header block of more than `2 * max_header_list_size` raw bytes,
    and yielding `frames_left` frames, a header block counting as many as its size says (then no
    more until it is set again)."""

    def __init__(self, max_header_list_size: int):
        super().__init__(server=True)
        self.max_header_block = 2 * max_header_list_size + _FRAMING
        self.frames_left = FRAMES_PER_TURN

    def __next__(self) -> Frame:
        if self.frames_left <= 0:
            raise StopIteration
        self.frames_left -= 1
        if len(self._data) >= 9:
            length, kind = int.from_bytes(self._data[:3], "big"), self._data[3]
            if kind == _CONTINUATION:
                length += sum(len(frame.data) for frame in self._headers_buffer)
            if kind in (_HEADERS, _PUSH_PROMISE, _CONTINUATION) and length > self.max_header_block:
                raise ProtocolError(f"header block larger than {self.max_header_block} bytes")
        frame = super().__next__()
        if isinstance(frame, HeadersFrame | PushPromiseFrame):  # the whole block, CONTINUATIONs joined
            self.frames_left -= len(frame.data) // HEADER_BYTES_PER_FRAME
        return frame

    def buffered(self) -> int:
        """Bytes received and not yet taken as frames."""
        return len(self._data)


_FIELD_OVERHEAD = 32  # what a field counts in a header list's size beyond its name and value
OVERSIZED = b"edgeagent-header-list-too-large"  # marks a list over the limit; the server resets its stream
# stands in for a request's list over the limit: valid for h2, so only the server's own check refuses it
_LITERAL_WINDOW = 4096  # bytes of the block a literal field is first decoded from
_OVERSIZED_REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"-"),
                      (OVERSIZED, b"")]


class HeaderListBound(Decoder):
    """hpack's Decoder, answering a header list over `max_header_list_size` with a stand-in
    carrying OVERSIZED instead of raising: the block is decoded to its end (keeping the HPACK table
    in step with the peer's) and only what fits the limit is kept while it is. A block of more
    fields than a list within the limit can hold raises OversizedHeaderListError, unless not
    `count_fields`."""

    def __init__(self, max_header_list_size: int, count_fields: bool = True):
        super().__init__(max_header_list_size)
        self.count_fields = count_fields  # False: a block of countless fields is decoded to its end

    def decode(self, data: bytes, raw: bool = False) -> list[HeaderTuple]:
        view = memoryview(data)
        headers: list[HeaderTuple] = []
        size, index, request, oversized = 0, 0, False, False
        fields_left = self.max_header_list_size // _FIELD_OVERHEAD + 1 if self.count_fields else -1
        while index < len(data):
            first = data[index]
            if first & 0x80:
                header, used = self._decode_indexed(view[index:])
            elif first & 0x40:
                header, used = self._literal(view, index, True)
            elif first & 0x20:
                if headers or oversized:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                used, header = self._update_encoding_context(view[index:]), None
            else:
                header, used = self._literal(view, index, False)
            index += used
            if header is None:
                continue
            fields_left -= 1
            if not fields_left:
                raise OversizedHeaderListError(f"more fields than a list of {self.max_header_list_size} bytes holds")
            request = request or header[0].startswith(b":")
            size += table_entry_size(header[0], header[1])  # len(name) + len(value) + _FIELD_OVERHEAD
            oversized = oversized or size > self.max_header_list_size
            if not oversized:
                headers.append(header)
        self._assert_valid_table_size()
        if oversized:
            return [HeaderTuple(*pair) for pair in _OVERSIZED_REQUEST] if request else \
                [HeaderTuple(OVERSIZED, b"")]
        return headers

    def _literal(self, view: memoryview, index: int, indexed: bool) -> tuple[HeaderTuple, int]:
        """hpack copies what it is given of the block for each literal field, which made a block of
        small fields cost time quadratic in its size (2.3 MB: 16 s): give it a window, doubled
        while the field is cut short by it, so that what is copied stays linear in the field."""
        window = _LITERAL_WINDOW
        while True:
            try:
                return self._decode_literal(view[index:index + window], indexed)
            except HPACKDecodingError:  # cut short by the window, or broken: broken once it holds the rest
                if index + window >= len(view):
                    raise
                window *= 2


_TABLE_SIZE = 4096  # HPACK's default dynamic table, all an answer's few repeated fields need
_CODE_BITS = [format(code, f"0{length}b") for code, length in zip(REQUEST_CODES, REQUEST_CODES_LENGTH, strict=True)]


class LinearHuffman(HuffmanEncoder):
    """hpack's Huffman coder in time linear in the value: each byte's code as a string of bits,
    joined, then read as one number."""

    def __init__(self) -> None:
        super().__init__(REQUEST_CODES, REQUEST_CODES_LENGTH)

    def encode(self, bytes_to_encode: bytes | None) -> bytes:
        if not bytes_to_encode:
            return b""
        bits = "".join(map(_CODE_BITS.__getitem__, bytes_to_encode))
        bits += "1" * (-len(bits) % 8)  # padded with the EOS code's first bits
        return int(bits, 2).to_bytes(len(bits) // 8, "big")


class BoundedEncoder(Encoder):
    """hpack's Encoder with LinearHuffman, whose dynamic table is never over 4 KiB, and whose next
    block signals at most two changes of its size (RFC 7541 4.2: the smallest since the last block,
    then the last), where hpack's kept every change, joined in time quadratic in their number."""

    def __init__(self) -> None:
        super().__init__()
        self.huffman_coder = LinearHuffman()

    @property
    def header_table_size(self) -> int:
        return self.header_table.maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:  # the most the peer's decoder keeps; ours is less
        self.header_table.maxsize = size = min(value, _TABLE_SIZE)
        if self.header_table.resized:  # signalled in the next block: the smallest since, then this one
            smallest = min([*self.table_size_changes, size])
            self.table_size_changes = [size] if smallest == size else [smallest, size]
        # hpack's table says whether the last setting changed it: one still unsignalled stays so
        self.header_table.resized = bool(self.table_size_changes)


class LengthBlindConnection(H2Connection):
    """h2's connection whose streams take no content-length from a request (LengthBlindStream)."""

    def _begin_new_stream(self, stream_id: int, allowed_ids: AllowedStreamIDs) -> H2Stream:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = LengthBlindStream
        return stream

    def release(self) -> None:
        """Once the connection is closed: no frame is received any more, and nothing refers back to
        the connection (its state goes as soon as its owner lets go of it)."""
        self._frame_dispatch_table = {}


class LengthBlindStream(H2Stream):
    """A stream that expects any number of DATA bytes, whatever content-length its headers give."""

    def _initialize_content_length(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self._expected_content_length = None
