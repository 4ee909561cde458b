"""Opening an HTTP/1.1 client connection: TCP (each address the name resolves to, in turn), TLS,
and a proxy in between.

- Through an http:// or https:// proxy (credentials in its URL go as Proxy-Authorization, Basic):
  to an https target, a CONNECT tunnel, then TLS with the target inside it; to an http target,
  the proxy connection itself, requests going in absolute form (the client's business).
- `ConnectError` says the connection could not be made at all: the name did not resolve, or no
  address accepted (refused, unreachable). Whatever failed after that (a TLS handshake, a proxy
  refusing the tunnel) is a `ClientError`: something answered. A connect that hangs is bounded
  by the request's timeout, not here.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from urllib.parse import unquote, urlsplit

from edgeagent.http1 import wire
from edgeagent.http1.pool import Connection, Route


class ClientError(Exception):
    """A request that failed after a connection to the server (or its proxy) was made, or as it
    was being made past TCP (TLS, the proxy's tunnel)."""


class ConnectError(ClientError):
    """No connection could be made: the name did not resolve, or every address refused it."""


_proxy_tls: ssl.SSLContext | None = None  # the system roots, for https:// proxies


def proxy_authorization(proxy: str) -> str | None:
    """The Proxy-Authorization value of the credentials in a proxy URL; None without."""
    parts = urlsplit(proxy)
    if parts.username is None and parts.password is None:
        return None
    user_pass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(user_pass.encode()).decode()


async def open_connection(route: Route, *, read_limit: int, send_buffer: int) -> Connection:
    """A new connection to `route`, through its proxy if it has one, TLS made when the target is
    https."""
    target_tls = route.ssl if route.scheme == "https" else None
    sni = route.server_hostname or route.host
    if not route.proxy:
        reader, writer = await _dial(route.host, route.port, target_tls, sni, read_limit, send_buffer)
        return Connection(route, reader, writer)
    proxy = urlsplit(route.proxy)
    proxy_port = proxy.port or (443 if proxy.scheme == "https" else 80)
    proxy_tls = _system_roots() if proxy.scheme == "https" else None
    reader, writer = await _dial(proxy.hostname or "", proxy_port, proxy_tls, proxy.hostname or "", read_limit,
                                 send_buffer)
    if route.scheme != "https":
        return Connection(route, reader, writer)
    try:
        await _tunnel(reader, writer, route)
        await writer.start_tls(target_tls or _system_roots(), server_hostname=sni)
    except BaseException as exc:
        writer.close()
        if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
            raise ClientError(f"TLS with {route.authority} through the proxy failed: {exc}") from exc
        if isinstance(exc, (OSError, wire.ProtocolError)):
            raise ClientError(f"the tunnel to {route.authority} through the proxy failed: {exc}") from exc
        raise
    return Connection(route, reader, writer)


async def _tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, route: Route) -> None:
    """CONNECT route's host:port through the proxy at the other end of the streams."""
    headers = wire.Headers([("Host", route.authority)])
    if (credentials := proxy_authorization(route.proxy)) is not None:
        headers.add("Proxy-Authorization", credentials)
    writer.write(f"CONNECT {route.authority} HTTP/1.1\r\n".encode() + headers.encode() + b"\r\n")
    await writer.drain()
    block = await wire.read_head(reader)
    if block is None:
        raise ClientError(f"the proxy closed the connection instead of tunnelling to {route.authority}")
    start, answer = wire.parse_head(block)
    _, status, reason = wire.parse_status_line(start)
    if not 200 <= status < 300:
        raise ClientError(f"the proxy refused the tunnel to {route.authority}: {status} {reason}".rstrip())


async def _dial(host: str, port: int, tls: ssl.SSLContext | None, sni: str, read_limit: int,
                send_buffer: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = await _connect(host, port, send_buffer)
    try:
        return await asyncio.open_connection(sock=sock, ssl=tls, server_hostname=sni if tls else None,
                                             limit=read_limit)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
            raise ClientError(f"TLS with {host}:{port} failed: {exc}") from exc
        if isinstance(exc, OSError):
            raise ClientError(f"the connection to {host}:{port} failed: {exc}") from exc
        raise


async def _connect(host: str, port: int, send_buffer: int) -> socket.socket:
    """A TCP socket connected to the first address of `host` that accepts; SO_SNDBUF is set before
    the connect, so the window scaling agreed fits it."""
    loop = asyncio.get_running_loop()
    try:
        addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    errors = []
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if send_buffer > 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            await loop.sock_connect(sock, address)
            return sock
        except OSError as exc:
            sock.close()
            errors.append(f"{address[0]}: {exc.strerror or exc}")
        except BaseException:
            sock.close()
            raise
    raise ConnectError(f"cannot connect to {host}:{port}: {'; '.join(errors) or 'no address'}")


def _system_roots() -> ssl.SSLContext:
    global _proxy_tls
    if _proxy_tls is None:
        _proxy_tls = ssl.create_default_context()
    return _proxy_tls
