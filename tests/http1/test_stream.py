"""ChunkReader: what wire reads from it is what was fed, however the bytes were split into blocks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from edgeagent.http1 import wire
from edgeagent.http1.stream import ChunkReader


def _fed(data: bytes, sizes: list[int], limit: int = wire.MAX_HEAD) -> ChunkReader:
    reader = ChunkReader(limit)
    position = 0
    for size in sizes:
        reader.feed_data(data[position:position + size])
        position += size
    reader.feed_data(data[position:])
    reader.feed_eof()
    return reader


@pytest.mark.parametrize("seed", range(20))
def test_pipelined_messages_split_anywhere_read_back_whole(seed):
    rng = random.Random(seed)
    bodies = [rng.randbytes(rng.choice([0, 1, 700, 70_000, 183_000])) for _ in range(4)]
    data = b"".join(b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (index, len(body), body)
                    for index, body in enumerate(bodies))
    data += b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    sizes = [rng.choice([1, 3, 100, 5000, 65536, 262144]) for _ in range(200)]

    async def read_all() -> list[tuple[bytes, bytes]]:
        reader = _fed(data, sizes)
        messages = []
        while (head := await wire.read_head(reader)) is not None:
            _, headers = wire.parse_head(head)
            body = b"".join([chunk async for chunk in wire.iter_body(reader, wire.body_length(headers, request=True))])
            messages.append((head.split(b" ")[1], body))
        return messages

    assert asyncio.run(read_all()) == [*((b"/%d" % i, body) for i, body in enumerate(bodies)), (b"/c", b"abcde")]


def test_a_head_longer_than_the_limit_is_refused_and_a_cut_one_is_incomplete():
    async def head(data: bytes, sizes: list[int], limit: int = wire.MAX_HEAD) -> bytes | None:
        return await wire.read_head(_fed(data, sizes, limit))

    long_head = b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n"
    with pytest.raises(wire.ProtocolError) as refused:
        asyncio.run(head(long_head, [100] * 60, limit=1024))
    assert refused.value.status == 431
    with pytest.raises(wire.ProtocolError, match="closed in the middle"):
        asyncio.run(head(b"GET / HTTP/1.1\r\nHost", [5]))
    assert asyncio.run(head(b"", [])) is None


def _framed(rng: random.Random) -> tuple[bytes, bytes]:
    """A chunked body of every spelling a chunk may have (runs of one size, mixed sizes, big
    chunks, extensions, spaces around the size, upper case, leading zeros, a trailer), and its data."""
    framed, data = bytearray(), bytearray()
    for _ in range(rng.randint(1, 40)):
        kind = rng.choice(["run", "mixed", "big", "odd"])
        sizes = {"run": [rng.randint(1, 17)] * rng.randint(1, 300), "mixed": [rng.randint(1, 40) for _ in range(50)],
                 "big": [rng.randint(1000, 70_000)], "odd": [rng.randint(1, 300)]}[kind]
        for size in sizes:
            piece = rng.randbytes(size)
            line = b"%x" % size
            if kind == "odd":
                line = rng.choice([b"%X" % size, b"00%x" % size, b" %x\t" % size, b"%x;name=value" % size,
                                   b"%x ; a=b;c" % size])
            framed += line + b"\r\n" + piece + b"\r\n"
            data += piece
    framed += rng.choice([b"0\r\n\r\n", b"0;end\r\nTrailer-A: 1\r\nTrailer-B: two\r\n\r\n"])
    return bytes(framed), bytes(data)


@pytest.mark.parametrize("seed", range(30))
def test_chunked_bodies_split_anywhere_are_read_whole_and_leave_the_next_request(seed):
    rng = random.Random(seed)
    framed, data = _framed(rng)
    head = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    after = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    sizes = [rng.choice([1, 2, 3, 7, 100, 5000, 65536]) for _ in range(300)]

    def plain() -> asyncio.StreamReader:  # asyncio's own reader, as the client reads answers with
        reader = asyncio.StreamReader(limit=wire.MAX_HEAD)
        reader.feed_data(head + framed + after)
        reader.feed_eof()
        return reader

    async def read_both(make: Callable[[], asyncio.StreamReader]) -> tuple[bytes, bytes | None]:
        reader = make()
        assert await wire.read_head(reader) is not None
        body = b"".join([chunk async for chunk in wire.iter_body(reader, -1)])
        return body, await wire.read_head(reader)

    expected = (data, b"GET /next HTTP/1.1\nHost: x")
    assert asyncio.run(read_both(lambda: _fed(head + framed + after, sizes))) == expected
    assert asyncio.run(read_both(plain)) == expected


@pytest.mark.parametrize("broken", [b"zz\r\nab\r\n", b"3\r\nabcd\r\n0\r\n\r\n", b"3\nabc\r\n0\r\n\r\n",
                                    b"3\r\nabc\n0\r\n\r\n", b"3\r\r\nabc\r\n0\r\n\r\n", b"3\r\nabc\r\r\n0\r\n\r\n",
                                    b"3\r\nabc\r\n0\n\r\n", b"3\r\nabc\r\n0\r\nX: y\n\r\n",
                                    b"1\r\na\r\n" * 500 + b"1\r\na\n\r\n", b"1\r\na\r\n" * 500 + b"1\r\nab\r\n",
                                    b"1\r\na\r\n" * 500 + b"2\r\nab\r\n" + b"1\r\nab\r\n0\r\n\r\n",
                                    b"00000000000000001\r\na\r\n0\r\n\r\n", b"1" + b" " * 9000 + b"\r\na\r\n0\r\n\r\n",
                                    b"0000000000000001\r\na\r\n" * 10_000 + b"0\r\n\r\n",  # framing 20 times the data
                                    b"1\r\na\r\n0\r\n" + b"X-Trailer: y\r\n" * 1000 + b"\r\n"])
@pytest.mark.parametrize("split", [1, 2, 5, 4096, 1 << 20])
def test_a_broken_chunked_framing_is_refused_however_it_is_split(broken, split):
    async def read() -> bytes:
        reader = _fed(broken, [split] * (len(broken) // split))
        return b"".join([chunk async for chunk in wire.iter_body(reader, -1)])

    with pytest.raises(wire.ProtocolError):
        asyncio.run(read())


def test_a_chunk_size_line_without_its_end_is_refused_before_the_connection_closes():
    """A line is held across blocks only up to its limit: what never ends is refused, not waited for."""
    async def read() -> None:
        reader = ChunkReader(wire.MAX_HEAD)
        for _ in range(70):  # a size line of 70,000 bytes, and no end: the client is still there
            reader.feed_data(b"f" * 1000)
        async with asyncio.timeout(2):
            async for _ in wire.iter_body(reader, -1):
                pass

    with pytest.raises(wire.ProtocolError, match="too long"):
        asyncio.run(read())
