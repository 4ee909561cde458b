"""The proxy a gRPC channel goes through, and the tunnel through it, as grpc-go (otelcol's gRPC
client) finds and dials them; and the ALPN a TLS connection must agree, as grpc-go checks it.

- Which proxy: Go's http.ProxyFromEnvironment for the URL `https://<host:port>` of the target
  (`http1/proxyenv.py`), read when the exporter starts. So HTTPS_PROXY (or https_proxy) and never
  HTTP_PROXY; NO_PROXY, `localhost` and loopback addresses go direct.
- Through a proxy the target is not resolved here: the CONNECT names host:port as configured and
  the proxy resolves it (grpc-go's default without WithLocalDNSResolution). The proxy's name is
  resolved and its addresses tried in turn; one connection whatever the balancer, the target
  being a single unresolved address.
- The handshake: `CONNECT host:port HTTP/1.1` with Host, User-Agent (the calls' own, as grpc-go
  sends) and, when the proxy URL carries credentials, Proxy-Authorization Basic. Only a 200 opens
  the tunnel (grpc-go's test); another status, a close, or what is not HTTP fails the connect with
  a `ClientError` saying what the proxy answered, and the calls end UNAVAILABLE (the export chain
  retries). Exactly the answer's head is read (lines ending in CRLF or a bare LF, as Go's
  ReadResponse takes them), so what the target sends first (an h2c server's SETTINGS) is left
  for HTTP/2, which then runs in the tunnel, under TLS when the exporter has it.
- Schemes: grpc-go ignores the proxy URL's scheme and speaks plaintext CONNECT to its host:port
  (port 443 when none is given: its DNS resolver's default), so `https://` proxies are not spoken
  TLS to (grpc-go's Documentation/proxy.md); this does the same for http:// and https://. Another
  scheme (socks5://, socks4://) would get an HTTP request it cannot read: it gets nothing, and
  `UnsupportedProxyError` names it without its credentials.
"""

from __future__ import annotations

import asyncio
import os
import socket

from edgeagent import lookup
from edgeagent.http1 import wire
from edgeagent.http1.dial import (
    ClientError,
    ConnectError,
    UnsupportedProxyError,
    proxy_authorization,
    shown_proxy,
    split_proxy,
)
from edgeagent.http1.proxyenv import EnvironmentProxies

_SCHEMES = ("http", "https")
_DEFAULT_PORT = 443


def environment_proxy(target: str) -> str:
    """The proxy URL grpc-go takes from the environment for `target` (host:port); "" for none."""
    return EnvironmentProxies(os.environ).for_url(f"https://{target}") or ""


def proxy_address(proxy: str) -> tuple[str, int]:
    """The host and port a proxy URL names; UnsupportedProxyError when gRPC cannot tunnel through it."""
    parts, port = split_proxy(proxy)
    if parts.scheme.lower() not in _SCHEMES:
        raise UnsupportedProxyError(f"the proxy {shown_proxy(proxy)} has the scheme {parts.scheme!r}, which gRPC "
                                    f"cannot tunnel through: use an http:// proxy (HTTP CONNECT)")
    return parts.hostname or "", port or _DEFAULT_PORT


async def resolve(host: str, port: int, proxy: str) -> tuple[str, list[tuple[str, int]]]:
    """The host connections go to and its addresses: the target's, or through `proxy` the proxy's
    (it resolves the target). ConnectError when the name does not resolve; UnsupportedProxyError."""
    if proxy:
        host, port = proxy_address(proxy)
    try:
        infos = await lookup.getaddrinfo(host, port)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode (an empty label)
        raise ConnectError(f"cannot resolve {f'the proxy {shown_proxy(proxy)}' if proxy else host}: {exc}") from None
    return host, list(dict.fromkeys((_numeric_host(info[4]), int(info[4][1])) for info in infos))


def _numeric_host(sockaddr: tuple[object, ...]) -> str:
    """The IP address of a lookup's sockaddr as a connect takes it again: an IPv6 one with a scope
    id (a link-local address) carries its zone (`fe80::1%eth0`), without which its connect fails."""
    host, scope = str(sockaddr[0]), sockaddr[3] if len(sockaddr) > 3 else 0
    if not isinstance(scope, int) or not scope:
        return host
    try:
        return f"{host}%{socket.if_indextoname(scope)}"
    except OSError:  # an interface gone since: its index names the zone as well
        return f"{host}%{scope}"


def size_buffers(sock: socket.socket | None, receive: int, send: int) -> None:
    """SO_RCVBUF and SO_SNDBUF of a connection's TCP socket (under TLS too); 0 keeps the system's."""
    for option, size in ((socket.SO_RCVBUF, receive), (socket.SO_SNDBUF, send)):
        if size > 0 and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def host_port(host: str, port: int) -> str:
    """host:port as an authority holds them: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_alpn(transport: asyncio.BaseTransport | None) -> None:
    """grpc-go refuses a TLS server that does not agree to HTTP/2 by ALPN: a ClientError."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    if protocol != "h2":
        raise ClientError(f"the server did not negotiate HTTP/2 by ALPN (it chose {protocol or 'nothing'})")


def failure(exc: Exception, timeout: float, *, tunnelling: bool) -> str:
    """What a connect that failed with `exc` says; `tunnelling`: its proxy had the CONNECT."""
    if isinstance(exc, TimeoutError):
        return f"{'the proxy did not answer the CONNECT' if tunnelling else 'no HTTP/2 answer'} within {timeout:g}s"
    if isinstance(exc, (OSError, ClientError)):  # ssl.SSLError; ClientError: the proxy refused the tunnel
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # unforeseen, yet still this connect's failure, not the caller's


async def connect(address: tuple[str, int]) -> socket.socket:
    """A TCP socket connected to the proxy at `address` (an IP address and port); OSError when not."""
    sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def tunnel(sock: socket.socket, proxy: str, target: str, user_agent: str) -> None:
    """CONNECT to `target` (host:port) through the proxy `sock` is connected to; a ClientError
    when it answers anything but a 200. The caller closes the socket when this fails."""
    request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {user_agent}\r\n"
    if (credentials := proxy_authorization(proxy)) is not None:
        request += f"Proxy-Authorization: {credentials}\r\n"
    try:
        await asyncio.get_running_loop().sock_sendall(sock, (request + "\r\n").encode())
        status, reason = await _answer(sock)
    except OSError as exc:
        raise ClientError(f"the proxy dropped the connection during the CONNECT: {exc}") from None
    if status != 200:
        raise ClientError(f"the proxy refused the tunnel: {status} {reason}".rstrip())


async def _answer(sock: socket.socket) -> tuple[int, str]:
    """The status and reason of the proxy's answer, its head taken off the socket and no byte more."""
    head = b""
    while True:
        await _readable(sock)
        try:
            peeked = sock.recv(wire.MAX_HEAD, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not peeked:
            raise ClientError("the proxy closed the connection instead of opening the tunnel"
                              + (f"; it sent {head[:64]!r}" if head else ""))
        end = _head_end(head + peeked)
        head += sock.recv(len(peeked) if end < 0 else end - len(head))
        if b"\n" in head:  # the status line: what is not HTTP fails now, not after a blank line
            try:
                line = head.partition(b"\n")[0].removesuffix(b"\r")
                _, status, reason = wire.parse_status_line(line.decode("latin-1"))
            except wire.ProtocolError:
                raise ClientError(f"the proxy answered what is not HTTP: {head[:64]!r}") from None
            if end >= 0:
                return status, reason
        if len(head) > wire.MAX_HEAD:
            raise ClientError(f"the proxy's answer has no end within {wire.MAX_HEAD} bytes")


def _head_end(data: bytes) -> int:
    """Where an answer's head ends, past its blank line; -1 before. A line ends at LF, a CR before
    it dropped, as Go's ReadResponse reads it: the blank line is LF or CRLF after an LF."""
    return min((at + len(blank) for blank in (b"\n\n", b"\n\r\n") if (at := data.find(blank)) >= 0), default=-1)


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
