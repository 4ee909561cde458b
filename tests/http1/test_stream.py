"""ChunkReader: what wire reads from it is what was fed, however the bytes were split into blocks."""

from __future__ import annotations

import asyncio
import random

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
