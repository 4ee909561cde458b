"""The HTTP/1.1 server's streamed answers (`Response(stream=...)`): chunked to HTTP/1.1 clients,
ended by the close to HTTP/1.0 ones, and the connection kept after a chunked answer."""

from __future__ import annotations

import asyncio

from edgeagent.http1.server import Response, Server
from tests.http1.test_server import echo, exchange, post, read_response


async def _three_pieces() -> Response:
    async def pieces():
        for piece in (b"one ", b"two ", b"three"):
            yield piece
    return Response(stream=pieces(), content_type="text/plain")


def test_a_streamed_answer_is_chunked_to_http_1_1_and_ends_with_the_close_to_http_1_0():
    async def scenario() -> tuple[bytes, bytes, bytes]:
        server = Server()
        server.post("/stream", lambda request: _three_pieces())
        server.post("/echo", echo)
        port = await server.listen(host="127.0.0.1", port=0)
        try:
            return await talk(port)
        finally:
            await server.stop(grace=1.0)

    async def talk(port: int) -> tuple[bytes, bytes, bytes]:
        chunked = await exchange(port, post("/stream", b"", b"Connection: close\r\n"))
        old = await exchange(port, b"POST /stream HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # kept alive after a chunked answer
        writer.write(post("/stream", b"") + post("/echo", b"after"))
        await reader.readuntil(b"0\r\n\r\n")
        _, after = await read_response(reader)
        writer.close()
        return chunked, old, after

    chunked, old, after = asyncio.run(scenario())
    head, _, body = chunked.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"
    head, _, body = old.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"Transfer-Encoding" not in head and body == b"one two three"
    assert after == b"after"
