"""A small real HTTP proxy on loopback: absolute-form requests (`POST http://host:port/path`) are
forwarded, `CONNECT host:port` is tunnelled. Every host it is asked for is reached at 127.0.0.1
(the port kept), so a test can name an upstream `collector.test` that only the proxy can reach.
It records each request line, its Proxy-Authorization and User-Agent headers. With `answer` set,
a CONNECT gets those bytes (a refusal, garbage, or nothing) and the connection closes; with
`coalesce`, its 200 goes out in one write with the target's first bytes (an h2c server speaks first)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tests.helpers.loop_server import LoopServer, pipe


@dataclass
class ProxyRequest:
    line: str  # "POST http://collector.test:4318/v1/traces HTTP/1.1" or "CONNECT collector.test:443 HTTP/1.1"
    proxy_authorization: str | None
    user_agent: str | None = None


@dataclass
class HttpProxy(LoopServer):
    port: int
    requests: list[ProxyRequest] = field(default_factory=list)
    answer: bytes | None = None  # what a CONNECT gets instead of a tunnel; None: the tunnel
    coalesce: bool = False
    established: bytes = b"HTTP/1.1 200 Connection established\r\n\r\n"  # the head that opens a tunnel

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request of the client connection; False when the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (header.partition(":") for header in header_lines if header)}
        self.requests.append(ProxyRequest(line, headers.get("proxy-authorization"), headers.get("user-agent")))
        method, target, _ = line.split(" ", 2)
        if method == "CONNECT" and self.answer is not None:
            writer.write(self.answer)
            await writer.drain()
            return False
        if method == "CONNECT":
            port = int(target.rpartition(":")[2])
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
            first = await upstream_reader.read(65536) if self.coalesce else b""
            writer.write(self.established + first)
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
            return False
        authority, _, path = target.removeprefix("http://").partition("/")
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", int(authority.rpartition(":")[2]))
        dropped = ("proxy-", "connection:")
        kept = [header for header in header_lines if header and not header.lower().startswith(dropped)]
        upstream_writer.write(f"{method} /{path} HTTP/1.1\r\n".encode() + "\r\n".join(kept).encode()
                              + b"\r\nConnection: close\r\n\r\n" + body)
        answer = await upstream_reader.read()  # the whole answer: the upstream closes after it
        upstream_writer.close()
        writer.write(answer)
        await writer.drain()
        return False  # the answer's length is the upstream's business: end the client connection with it
