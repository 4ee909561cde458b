"""A small real SOCKS5 proxy on loopback (RFC 1928, with RFC 1929's username/password): it
records what each client asked for (the methods offered, the credentials, the CONNECT target as
sent, the first line the client then sent through it) and relays to 127.0.0.1 at the port asked
for, whatever the host, so a test can name an upstream `collector.test` that only the proxy can
reach. `behaviour` makes it hostile instead: `close` ends the connection after the greeting,
`garbage` answers it with what is not SOCKS, `hang` never answers."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

from tests.helpers.loop_server import LoopServer, pipe


@dataclass
class SocksRequest:
    methods: bytes = b""  # the authentication methods the client offered
    username: str | None = None
    password: str | None = None
    address_type: int = 0  # of the CONNECT target: 1 IPv4, 3 domain name, 4 IPv6
    host: str = ""
    port: int = 0
    first_line: str = ""  # the first line of what the client first sent through; "(binary)" for TLS


@dataclass
class SocksProxy(LoopServer):
    port: int
    credentials: tuple[str, str] | None = None  # required when set: offered 0x02 and checked
    behaviour: str = "relay"
    requests: list[SocksRequest] = field(default_factory=list)

    def url(self, scheme: str = "socks5", userinfo: str = "") -> str:
        return f"{scheme}://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = SocksRequest()
        self.requests.append(request)
        try:
            await self._serve(reader, writer, request)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: SocksRequest) -> None:
        version, count = await reader.readexactly(2)
        request.methods = await reader.readexactly(count)
        if version != 5 or self.behaviour == "close":
            return
        if self.behaviour == "garbage":
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await reader.read()  # until the client gives up
            return
        if self.behaviour == "hang":
            await reader.read()
            return
        wanted = 2 if self.credentials else 0
        if wanted not in request.methods:
            writer.write(b"\x05\xff")
            return
        writer.write(bytes([5, wanted]))
        if self.credentials and not await self._authenticated(reader, writer, request):
            return
        await self._connect(reader, writer, request)

    async def _authenticated(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             request: SocksRequest) -> bool:
        _, length = await reader.readexactly(2)
        request.username = (await reader.readexactly(length)).decode()
        request.password = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        right = (request.username, request.password) == self.credentials
        writer.write(b"\x01\x00" if right else b"\x01\x01")
        return right

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: SocksRequest) -> None:
        _, command, _, request.address_type = await reader.readexactly(4)
        if request.address_type == 1:
            request.host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif request.address_type == 4:
            request.host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        else:
            request.host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        request.port = int.from_bytes(await reader.readexactly(2))
        if command != 1:
            writer.write(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")  # command not supported
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", request.port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00")  # connection refused
            return
        writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + request.port.to_bytes(2))
        first = await reader.read(65536)  # a request line comes whole in the client's first write
        line = first.partition(b"\r\n")[0]
        request.first_line = line.decode("latin-1") if line.isascii() else "(binary)"
        upstream_writer.write(first)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
