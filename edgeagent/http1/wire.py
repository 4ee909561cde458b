"""HTTP/1.1 on the wire, shared by edgeagent's server and client: header blocks, headers and
message bodies (RFC 9112), read from an asyncio StreamReader.

Only what a message's framing needs is interpreted here; what the headers mean is the caller's.
Everything read is bounded: a head by `max_head` bytes, a chunk-size or trailer line by
MAX_LINE, a chunked body's framing beyond its data by MAX_EXCESS (as Go's), its trailer by
MAX_LINE, a body by what the caller asks of `iter_body`. A framing that could be read two ways
is refused, as smuggling: Content-Length beside Transfer-Encoding in a request, two different
lengths, a control character in a header value (only space and tab are whitespace around a
value, where Python's strip() also takes \x0b, \x1c or \xa0), a CR that ends no line, a chunked
line not ending in CRLF. A response with both framings is read chunked, as RFC 9112 says a
client reads it.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TypeVar, overload

from edgeagent.http1.stream import ChunkReader

MAX_HEAD = 64 * 1024  # request or status line and headers; Go allows 1 MiB (README says why not here)
MAX_LINE = 8 * 1024  # a chunk-size line or a trailer line; the whole trailer
MAX_EXCESS = 16 * 1024  # chunked framing beyond 16 bytes a chunk plus twice its data (Go's rule)
_CTL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")  # control characters but tab, and LF (what joins a head's lines)
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_READ = 256 * 1024  # the most bytes handed on at once
T = TypeVar("T")


class ProtocolError(Exception):
    """A message that breaks HTTP/1.1's grammar or edgeagent's limits; `status` is the answer a
    server gives (400 by default), after which the connection closes."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Headers(Mapping[str, str]):
    """Header fields in order, looked up case-insensitively; a name given twice holds both values
    (`getall`), and `[name]` is the first."""

    __slots__ = ("_fields", "_index")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()):
        self._fields: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}
        for name, value in fields:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._fields.append((name, value))
        self._index.setdefault(name.lower(), []).append(value)

    def __setitem__(self, name: str, value: str) -> None:
        """Replaces every field of that name with one."""
        key = name.lower()
        if key in self._index:
            self._fields = [(n, v) for n, v in self._fields if n.lower() != key]
            del self._index[key]
        self.add(name, value)

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        if self._index.pop(key, None) is None:
            raise KeyError(name)
        self._fields = [(n, v) for n, v in self._fields if n.lower() != key]

    def setdefault(self, name: str, value: str) -> str:
        if name.lower() not in self._index:
            self.add(name, value)
        return self._index[name.lower()][0]

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()][0]

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, default: str, /) -> str: ...
    @overload
    def get(self, name: str, default: T, /) -> str | T: ...
    def get(self, name: str, default: object = None, /) -> object:
        """The first value of `name`, or `default` (without Mapping.get's KeyError on a miss)."""
        values = self._index.get(name.lower())
        return values[0] if values else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def getall(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]  # every field, repeated names too
        return list(self._fields)

    def copy(self) -> Headers:
        return Headers(self._fields)

    def encode(self) -> bytes:
        """The fields as they go on the wire, each line ending in CRLF: latin-1, as they are read,
        and a field with characters beyond it (never one read off the wire) in UTF-8, as Go sends it."""
        return b"".join(_encode_field(f"{name}: {value}\r\n") for name, value in self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


def unread(reader: asyncio.StreamReader) -> bytes:
    """The bytes `reader` holds that nobody read yet (StreamReader has no public peek)."""
    return bytes(getattr(reader, "_buffer", b""))


def _encode_field(line: str) -> bytes:
    try:
        return line.encode("latin-1")
    except UnicodeEncodeError:
        return line.encode()


async def read_head(reader: asyncio.StreamReader, max_head: int = MAX_HEAD) -> bytes | None:
    """The lines of the next head up to its blank line, each without its line end, joined by LF;
    None when the peer closed before a byte of it arrived. Empty lines before a start line are
    skipped (RFC 9112 2.2).

    A line ends at LF, and one CR right before it is dropped: Go's textproto (bufio's ReadLine)
    reads a head so, in requests and answers alike, and RFC 9112 2.2 allows it. Reading a head
    as Go does is what keeps its framing headers read as Go reads them; waiting for CRLF CRLF
    held a head in bare LF until the wait for it ran out. A CR that ends no line stays in its
    line, where `parse_head` refuses it, as Go refuses it in a request line, name or value."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if not lines and not exc.partial.strip():
                return None
            raise ProtocolError("the connection closed in the middle of a message head") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"the message head exceeds {max_head} bytes", status=431) from None
        size += len(line)
        if size > max_head:
            raise ProtocolError(f"the message head exceeds {max_head} bytes", status=431)
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if line:
            lines.append(line)
        elif lines:
            return b"\n".join(lines)


def parse_head(block: bytes, *, unfold: bool = False) -> tuple[str, Headers]:
    """The start line and the header fields of a head read by `read_head` (its lines joined by LF);
    with `unfold` (a response), a folded field's lines joined by a space, as RFC 9112 5.2 asks of
    a client (a server refuses them)."""
    if _CTL.search(block):
        raise ProtocolError("the message head holds a control character")
    lines = block.split(b"\n")
    if unfold:
        lines = _unfolded(lines)
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.issuperset(name):
            what = "folded header lines are" if line[:1] in (b" ", b"\t") else f"the header line {line[:60]!r} is"
            raise ProtocolError(f"{what} not valid HTTP/1.1")
        headers.add(name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
    try:
        start = lines[0].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("the start line is not ASCII") from None
    return start, headers


def _unfolded(lines: list[bytes]) -> list[bytes]:
    joined: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and len(joined) > 1:  # never onto the start line
            joined[-1] = joined[-1].rstrip(b" \t") + b" " + line.strip(b" \t")
        else:
            joined.append(line)
    return joined


def parse_request_line(line: str) -> tuple[str, str, tuple[int, int]]:
    """(method, target, version) of a request line."""
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or not _TOKEN.issuperset(parts[0].encode()):
        raise ProtocolError(f"invalid request line {line[:80]!r}")
    return parts[0], parts[1], parse_version(parts[2], status=505)


def parse_status_line(line: str) -> tuple[tuple[int, int], int, str]:
    """(version, status, reason) of a status line."""
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or not _ascii_digits(code):
        raise ProtocolError(f"invalid status line {line[:80]!r}")
    return parse_version(version), int(code), reason


def parse_version(text: str, status: int = 400) -> tuple[int, int]:
    if len(text) != 8 or not text.startswith("HTTP/") or text[6] != "." or not _ascii_digits(text[5] + text[7]):
        raise ProtocolError(f"invalid HTTP version {text[:20]!r}")
    version = int(text[5]), int(text[7])
    if version[0] != 1:
        raise ProtocolError(f"HTTP/{version[0]}.{version[1]} is not supported; speak HTTP/1.1", status=status)
    return version


def _ascii_digits(text: str) -> bool:
    """0-9 only, as Go reads a status and a version: str.isdigit also takes "²" and other scripts'
    digits, which int() refuses or reads."""
    return text.isascii() and text.isdigit()


def body_length(headers: Headers, *, request: bool) -> int | None:
    """How a message's body is framed: its length, -1 for chunked, None for "until the connection
    closes" (responses only; a request without either has no body). A response with both framings
    is read chunked, as RFC 9112 6.3 and Go read it (the caller must not reuse its connection)."""
    lengths = headers.getall("Content-Length")
    encodings = headers.getall("Transfer-Encoding")
    if encodings:
        if lengths and request:
            raise ProtocolError("a message with both Content-Length and Transfer-Encoding is refused")
        codings = [c.strip(" \t").lower() for value in encodings for c in value.split(",") if c.strip(" \t")]
        if codings != ["chunked"]:
            raise ProtocolError(f"Transfer-Encoding {', '.join(encodings)!r} is not supported; use chunked",
                                status=501)
        return -1
    if lengths:
        values = {v.strip(" \t") for value in lengths for v in value.split(",")}
        if len(values) != 1 or not (value := values.pop()).isdigit() or not value.isascii():
            raise ProtocolError(f"invalid Content-Length {', '.join(lengths)!r}")
        return int(value)
    return 0 if request else None


async def iter_body(reader: asyncio.StreamReader, length: int | None) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive, framed as `body_length` said; raises ProtocolError when
    the peer closes early or breaks the chunked framing. The caller bounds the total."""
    if length is None:
        while chunk := await reader.read(_READ):
            yield chunk
        return
    if length >= 0:
        left = length
        while left:
            chunk = await reader.read(min(left, _READ))
            if not chunk:
                raise ProtocolError(f"the connection closed {left} bytes short of the body's Content-Length")
            left -= len(chunk)
            yield chunk
        return
    decoder = _Chunked()
    while not decoder.done:
        block = await reader.read(_READ)
        if not block:
            raise ProtocolError(decoder.cut_short())
        try:
            data = decoder.feed(block)
        finally:  # what this block holds past the body, a broken framing or one step's work is read again
            if decoder.rest:
                _give_back(reader, decoder.rest)
        if data:
            yield data
        if decoder.rest and not decoder.done:  # a step's work done: the event loop's other tasks first
            await asyncio.sleep(0)


def _give_back(reader: asyncio.StreamReader, data: bytes) -> None:
    """Puts `data`, just read, back in front of what `reader` holds."""
    if isinstance(reader, ChunkReader):
        reader.give_back(data)
    else:  # asyncio's own: its buffer is a bytearray
        buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
        buffer[:0] = data


class _Chunked:
    """A chunked body's framing (RFC 9112 7.1), read from blocks as they come, as many chunks as a
    block holds at a time. A chunk costs a few steps of a loop, not an await and a step of every
    generator up to the handler: at 4 to 7 us a chunk, a 1 MB body of 1-byte chunks, which Go
    reads in 0.06 s, held the event loop for seconds. Runs of tiny chunks of one size (what such
    a client sends) are matched at once and their data gathered by slices (`_run`), and one
    `feed` reads at most _STEPS other elements before the caller lets the loop's other tasks run.

    The rules are those of a line-by-line reading: a line ends in CRLF with no other CR and is at
    most MAX_LINE bytes, a chunk's size is 1 to 16 hex digits (spaces and tabs around them,
    extensions after them, skipped), its data is followed by CRLF, the framing beyond 16 bytes a
    chunk plus twice its data is at most MAX_EXCESS, the trailer at most MAX_LINE bytes. An
    element cut by a block's end is held (at most a line) and read with the next block."""

    __slots__ = ("done", "excess", "held", "left", "rest", "state", "trailer")

    def __init__(self) -> None:
        self.state = _SIZE
        self.left = 0  # data bytes of the current chunk not read yet
        self.held = b""  # the start of an element the last block cut
        self.excess = 0  # framing bytes beyond what the data read so far allows
        self.trailer = 0  # trailer bytes so far
        self.rest = b""
        self.done = False

    def cut_short(self) -> str:
        """What to say of a body whose connection closed before its end."""
        if self.state == _DATA:
            return "the connection closed in the middle of a chunk"
        return "the connection closed in the middle of a chunked body"

    def feed(self, block: bytes) -> bytes:
        """The data `block` holds (b"" when none); ProtocolError on a broken framing. `rest` is then
        what this call left of the block: what follows the body's end or the start of a broken
        element, or what lies past _STEPS elements (the body goes on)."""
        self.rest = b""
        if self.state == _DATA and not self.held and len(block) <= self.left:
            self.left -= len(block)  # a block of data alone: handed on as it came
            if not self.left:
                self.state = _DATA_END
            return block
        if self.held:
            block, self.held = self.held + block, b""
        pieces: list[bytes | bytearray | memoryview] = []
        self._parse(block, pieces)
        return b"".join(pieces)

    def _parse(self, block: bytes, pieces: list[bytes | bytearray | memoryview]) -> None:
        view = memoryview(block)
        end = len(block)
        position = 0
        steps = _STEPS
        try:
            while position < end and steps > 0 and not self.done:
                if self.state == _SIZE:
                    position, steps = self._whole_chunks(block, view, position, steps, pieces)
                    if position == end or steps <= 0:
                        break
                after = self._element(block, view, position, pieces)
                steps -= 1
                if after < 0:  # an element the block cuts: read with the next
                    if end - position >= MAX_LINE:  # no LF within MAX_LINE bytes
                        raise ProtocolError("a chunked body's line is too long")
                    self.held, position = block[position:], end
                    break
                position = after
        except ProtocolError:
            self.rest = block[position:]
            raise
        self.rest = block[position:]

    def _whole_chunks(self, block: bytes, view: memoryview, position: int, steps: int,
                      pieces: list[bytes | bytearray | memoryview]) -> tuple[int, int]:
        """The chunks from `position` that the block holds whole and whose size lines are hex
        digits alone (nearly every chunk), in a tight loop; where they end, and the steps left.
        The first chunk that is not such, or breaks a rule, is left to `_element`."""
        match = _SIZE_LINE.match
        append = pieces.append
        end = len(block)
        excess = self.excess
        previous = 0  # the size of the chunk before: a second one of a tiny size may begin a run
        while steps > 0:
            simple = match(block, position)
            if simple is None:
                break
            line_end = simple.end()
            size = int(simple.group(1), 16)
            data_end = line_end + size
            grown = excess + line_end - position - 14 - 2 * size  # the line, the CRLFs, the data's
            if not size or data_end + 2 > end or grown > MAX_EXCESS or not block.startswith(b"\r\n", data_end):
                break
            append(block[line_end:data_end] if size < _COPIED else view[line_end:data_end])
            excess = grown if grown > 0 else 0
            steps -= 1
            position = data_end + 2
            if size == previous and size <= _RUN_MAX and line_end - simple.start() <= 4:
                position, count = self._run(block, position, simple.group(1), size, pieces)
                excess = max(0, excess - count * (12 + 2 * size - len(simple.group(1))))
            previous = size
        self.excess = excess
        return position, steps

    def _element(self, block: bytes, view: memoryview, position: int,
                 pieces: list[bytes | bytearray | memoryview]) -> int:
        """Reads the element at `position`, whatever the state; where it ends, -1 when the block
        cuts it."""
        end = len(block)
        if self.state == _DATA:
            take = min(self.left, end - position)
            pieces.append(view[position:position + take])
            self.left -= take
            if not self.left:
                self.state = _DATA_END
            return position + take
        if self.state == _DATA_END:
            if end - position < 2:
                return -1
            if not block.startswith(b"\r\n", position):
                raise ProtocolError(_NO_CRLF_AFTER_DATA)
            self.state = _SIZE
            return position + 2
        line_end = _line_end(block, position)
        if not line_end:
            return -1
        line = _checked(block[position:line_end])
        if self.state == _SIZE:
            size = _chunk_size(line)
            self.excess = max(0, self.excess + len(line) + 4 - 16 - 2 * size)  # the line, the CRLFs, the data's
            if self.excess > MAX_EXCESS:
                raise ProtocolError("a chunked body holds far more framing than data")
            self.state, self.left = (_DATA, size) if size else (_TRAILER, 0)
        elif not line:  # the trailer's end, and the body's
            self.done = True
        else:
            self.trailer += len(line)
            if self.trailer > MAX_LINE:
                raise ProtocolError(f"a chunked body's trailer exceeds {MAX_LINE} bytes")
        return line_end

    def _run(self, block: bytes, position: int, digits: bytes, size: int,
             pieces: list[bytes | bytearray | memoryview]) -> tuple[int, int]:
        """The chunks from `position` of `size` bytes spelled `digits`, read at once; where they
        end and how many they were. Each one's framing is below what its data allows (16 bytes
        plus twice the data), so they only shrink the excess."""
        run = _runs(digits, size).match(block, position)
        if run is None:
            return position, 0
        record = len(digits) + 4 + size
        first, stop = position + len(digits) + 2, run.end()
        if size == 1:
            pieces.append(block[first:stop:record])
        else:
            data = bytearray((stop - position) // record * size)
            for offset in range(size):  # the run's data, a column of its records at a time
                data[offset::size] = block[first + offset:stop:record]
            pieces.append(data)
        return stop, (stop - position) // record


_SIZE, _DATA, _DATA_END, _TRAILER = range(4)  # what a chunked body's reading expects next
_STEPS = 256  # elements one feed reads in Python (well under a millisecond) before the loop's other tasks run
_RUN_MAX = 16  # the largest chunk read in runs of its size
_COPIED = 4096  # a chunk's data smaller than this is sliced out of its block, a larger one viewed (copied once)
_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,16})\r\n")
_NO_CRLF_AFTER_DATA = "a chunk is not followed by CRLF where its size says it ends"


@functools.lru_cache(maxsize=64)
def _runs(digits: bytes, size: int) -> re.Pattern[bytes]:
    """Chunks of `size` bytes, one after another, each spelled `digits`."""
    return re.compile(rb"(?:%b\r\n.{%d}\r\n)+" % (digits, size), re.DOTALL)


def _line_end(block: bytes, start: int) -> int:
    """Where the line from `start` ends, after its LF; 0 when the block cuts it."""
    return block.find(b"\n", start) + 1


def _checked(line: bytes) -> bytes:
    """A chunk-size or trailer line, with its LF, without its CRLF."""
    if len(line) > MAX_LINE:
        raise ProtocolError("a chunked body's line is too long")
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise ProtocolError("a chunked body's line does not end in CRLF")
    return line[:-2]


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip(b" \t")
    if not digits or len(digits) > 16 or digits.translate(None, b"0123456789abcdefABCDEF"):
        raise ProtocolError(f"invalid chunk size {line[:40]!r}")
    return int(digits, 16)
