"""Opening an HTTP/1.1 client connection: TCP (each address the name resolves to, in turn), TLS,
and a proxy in between.

- Through an http:// or https:// proxy (credentials in its URL go as Proxy-Authorization, Basic):
  to an https target, a CONNECT tunnel, then TLS with the target inside it; to an http target,
  the proxy connection itself, requests going in absolute form (the client's business).
- Through a socks5:// or socks5h:// proxy (port 1080 unless given), as Go's Transport: the SOCKS5
  handshake (`socks.py`, credentials in the URL as username/password) for the target's host and
  port, then TLS with an https target inside it; requests in origin form, as to the target.
- Through a proxy of any other scheme (`socks4://`, `socks4a://`, `ftp://`): no connection at
  all, an `UnsupportedProxyError` naming the proxy (without its credentials) and the schemes
  there are. Go's Transport documents http, https, socks5 and socks5h as its proxy types but
  speaks HTTP to a proxy of any other scheme (golang/go#28964), which a SOCKS4 server answers
  with garbage or a close: the same failed export, with an error that points nowhere.
- `ConnectError` says the connection could not be made at all: the name did not resolve, or no
  address accepted (refused, unreachable). Whatever failed after that (a TLS handshake, a proxy
  refusing the tunnel) is a `ClientError`: something answered. A connect that hangs is bounded
  by the request's timeout; with more addresses to try, each gets its share of the time left
  (at least 2 s), as Go's dialer gives it, so one that swallows the SYN does not starve the rest.
  A name with addresses of both families is dialled as Go dials it: those of the other family
  start 300 ms into the first's (Happy Eyeballs), so an IPv6 path that drops SYNs costs a new
  connection 300 ms, not half the request's timeout.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import socket
import ssl
from collections.abc import Sequence
from urllib.parse import SplitResult, unquote, urlsplit

from edgeagent import lookup
from edgeagent.http1 import eyeballs, socks, wire
from edgeagent.http1.pool import Connection, Route

Address = tuple[int, int, int, str, tuple[object, ...]]  # as getaddrinfo gives them
_MIN_ATTEMPT = 2.0  # seconds an address gets at least when others wait (Go's saneMinimum)
FALLBACK_DELAY = 0.3  # seconds before the other family's addresses are tried too (Go's fallbackDelay)
_KEEPALIVE_SECONDS = 15  # TCP keepalive idle time and probe interval, as Go's net.Dialer


class ClientError(Exception):
    """A request that failed after a connection to the server (or its proxy) was made, or as it
    was being made past TCP (TLS, the proxy's tunnel)."""


class ConnectError(ClientError):
    """No connection could be made: the name did not resolve, or every address refused it."""


class UnsupportedProxyError(ClientError):
    """The proxy URL's scheme is none this client speaks, or the URL cannot be read; nothing was
    sent anywhere."""


PROXY_SCHEMES = ("http", "https", *socks.SCHEMES)


_proxy_tls: ssl.SSLContext | None = None  # the system roots, for https:// proxies when no TLS is given


def forwards(proxy: str) -> bool:
    """Whether requests to an http:// target go to `proxy` itself, in absolute form (an HTTP
    proxy), rather than through a connection it makes (SOCKS)."""
    return bool(proxy) and urlsplit(proxy).scheme not in socks.SCHEMES


def proxy_authorization(proxy: str) -> str | None:
    """The Proxy-Authorization value of the credentials in a proxy URL; None without."""
    if (credentials := _credentials(proxy)) is None:
        return None
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


def shown_proxy(proxy: str) -> str:
    """A proxy URL as an error shows it: what stands between its scheme and its last '@' as `***`,
    so credentials are masked even when an unencoded '/', '?' or '#' in them ends urlsplit's netloc."""
    scheme, separator, rest = proxy.partition("://")
    if not separator:
        scheme, rest = "", proxy
    if "@" not in rest:
        return proxy
    return f"{scheme}{separator}***@{rest.rpartition('@')[2]}"


def split_proxy(proxy: str) -> tuple[SplitResult, int | None]:
    """A proxy URL's parts and port (None when it has none); UnsupportedProxyError, which shows it
    masked, when they cannot be read: urllib's ValueError would quote part of the password."""
    try:
        parts = urlsplit(proxy)
        return parts, parts.port
    except ValueError:
        raise UnsupportedProxyError(f"the proxy {shown_proxy(proxy)} cannot be read: its host or port is not valid "
                                    f"(percent-encode a '/', '?', '#' or '@' in its user or password)") from None


def url_host(parts: SplitResult) -> str:
    """The host a URL connects to, as Go's url.Parse reads it: an IPv6 address's zone is written
    `%25` and escaped (`[fe80::1%25eth0]`, RFC 6874), and keeps its case (an interface's name)."""
    host = parts.hostname or ""
    if "%25" not in host:
        return host
    address, _, zone = parts.netloc.rpartition("@")[2].partition("]")[0].lstrip("[").partition("%25")
    return f"{address.lower()}%{unquote(zone)}"


def _credentials(proxy: str) -> tuple[str, str] | None:
    """The user and password a proxy URL holds, decoded; None without."""
    parts = urlsplit(proxy)
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def read_proxy(proxy: str) -> tuple[SplitResult, int]:
    """A proxy URL's parts and the port to connect to; UnsupportedProxyError when this client
    cannot go through it (its scheme, or a URL that cannot be read)."""
    parts, port = split_proxy(proxy)
    if parts.scheme not in PROXY_SCHEMES:
        raise UnsupportedProxyError(f"the proxy {shown_proxy(proxy)} has the scheme {parts.scheme!r}, which "
                                    f"is not supported: use one of {', '.join(PROXY_SCHEMES)}")
    return parts, port or (socks.DEFAULT_PORT if parts.scheme in socks.SCHEMES else
                           443 if parts.scheme == "https" else 80)


async def open_connection(route: Route, *, read_limit: int, send_buffer: int,
                          deadline: float | None = None) -> Connection:
    """A new connection to `route`, through its proxy if it has one, TLS made when the target is
    https; `deadline` (the loop's time) the request's, shared among the addresses tried."""
    target_tls = route.ssl if route.scheme == "https" else None
    sni = route.server_hostname or route.host
    if not route.proxy:
        reader, writer = await _dial(route.host, route.port, target_tls, sni, read_limit, send_buffer, deadline)
        return Connection(route, reader, writer)
    proxy, proxy_port = read_proxy(route.proxy)
    through_socks = proxy.scheme in socks.SCHEMES
    proxy_tls = (route.ssl or _system_roots()) if proxy.scheme == "https" else None
    reader, writer = await _dial(proxy.hostname or "", proxy_port, proxy_tls, proxy.hostname or "", read_limit,
                                 send_buffer, deadline)
    if route.scheme != "https" and not through_socks:
        return Connection(route, reader, writer)
    try:
        if through_socks:
            await socks.handshake(reader, writer, route.host, route.port, _credentials(route.proxy))
        else:
            await _tunnel(reader, writer, route)
        if route.scheme == "https":
            await writer.start_tls(target_tls or _system_roots(), server_hostname=sni)
    except BaseException as exc:
        writer.close()
        if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
            raise ClientError(f"TLS with {route.authority} through the proxy failed: {_why(exc)}") from exc
        if isinstance(exc, socks.SocksError):
            raise ClientError(f"the SOCKS5 proxy {proxy.hostname}:{proxy_port} gave no connection to "
                              f"{route.authority}: {exc}") from exc
        if isinstance(exc, (OSError, wire.ProtocolError)):
            raise ClientError(f"the tunnel to {route.authority} through the proxy failed: {_why(exc)}") from exc
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
    start, answer = wire.parse_head(block, unfold=True)
    _, status, reason = wire.parse_status_line(start)
    if not 200 <= status < 300:
        raise ClientError(f"the proxy refused the tunnel to {route.authority}: {status} {reason}".rstrip())


async def _dial(host: str, port: int, tls: ssl.SSLContext | None, sni: str, read_limit: int,
                send_buffer: int, deadline: float | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = await _connect(host, port, send_buffer, deadline)
    try:
        return await asyncio.open_connection(sock=sock, ssl=tls, server_hostname=sni if tls else None,
                                             limit=read_limit)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
            raise ClientError(f"TLS with {host}:{port} failed: {_why(exc)}") from exc
        if isinstance(exc, OSError):
            raise ClientError(f"the connection to {host}:{port} failed: {_why(exc)}") from exc
        raise


async def _connect(host: str, port: int, send_buffer: int, deadline: float | None) -> socket.socket:
    try:
        addresses = await lookup.getaddrinfo(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    try:
        return await connect_first(addresses, send_buffer=send_buffer, deadline=deadline)
    except ConnectError as exc:
        raise ConnectError(f"cannot connect to {host}:{port}: {exc}") from None


async def connect_first(addresses: Sequence[Address], *, send_buffer: int, deadline: float | None) -> socket.socket:
    """A TCP socket connected to the first of `addresses` that accepts, as Go's dialer finds it: the
    addresses of the first one's family in turn, those of the other family (the fallbacks) in turn
    too, started FALLBACK_DELAY after the first or as soon as the first family failed (Happy
    Eyeballs). Within a family each address but the last gets its share of the time to `deadline`.
    SO_SNDBUF is set before the connect, so the window scaling agreed fits it."""
    primaries = [address for address in addresses if address[0] == addresses[0][0]] if addresses else []
    fallbacks = [address for address in addresses if address[0] != primaries[0][0]] if primaries else []
    families = [family for family in (primaries, fallbacks) if family]
    try:
        return await eyeballs.first_of([functools.partial(_connect_serial, family, send_buffer, deadline)
                                        for family in families], FALLBACK_DELAY, discard=socket.socket.close)
    except eyeballs.AllFailed as failed:
        for group in failed.errors:
            if not isinstance(group, _Refused):
                raise group from None  # not a connect's failure: unforeseen, as it came
        raise connect_failure([error for group in failed.errors if isinstance(group, _Refused)
                               for error in group.errors]) from None


class _Refused(Exception):
    """Every address of one family failed: their errors."""

    def __init__(self, errors: list[OSError]):
        super().__init__(str(connect_failure(errors)))
        self.errors = errors


async def _connect_serial(addresses: Sequence[Address], send_buffer: int, deadline: float | None) -> socket.socket:
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    for index, (family, kind, proto, _, address) in enumerate(addresses):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if send_buffer > 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            async with asyncio.timeout_at(_attempt_deadline(loop.time(), deadline, len(addresses) - index)):
                await loop.sock_connect(sock, address)
            keep_alive(sock)
            return sock
        except OSError as exc:  # TimeoutError too: this address's share ran out
            sock.close()
            exc.add_note(str(address[0]))
            errors.append(exc)
        except BaseException:
            sock.close()
            raise
    raise _Refused(errors)


def keep_alive(sock: socket.socket) -> None:
    """TCP keepalive as Go's net.Dialer sets it for otelcol (probes after 15 s idle, every 15 s): a
    peer that vanished without a reset (a NAT mapping dropped, a host powered off) fails the wait for
    its answer in minutes instead of never when the exporter has no timeout (`timeout: 0`)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option in ("TCP_KEEPIDLE", "TCP_KEEPINTVL"):  # Linux names; elsewhere the system's timing
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), _KEEPALIVE_SECONDS)


def connect_failure(errors: Sequence[OSError]) -> ClientError:
    """What the failed connects to every address say: ConnectError when none was answered
    (refused, unreachable, timed out); a ClientError when one was reset as it was accepted, which
    a busy loop can see before it sees the connect complete: something listens there."""
    text = "; ".join(f"{' '.join(getattr(exc, '__notes__', []))}: {exc.strerror or str(exc) or 'timed out'}"
                     for exc in errors) or "no address"
    if any(isinstance(exc, ConnectionResetError) for exc in errors):
        return ClientError(f"reset as it was accepted: {text}")
    return ConnectError(text)


def _attempt_deadline(now: float, deadline: float | None, remaining: int) -> float | None:
    """When one of `remaining` addresses stops being tried (Go's partialDeadline); None: the
    request's own deadline bounds it (the last address, or too little time left to share)."""
    if deadline is None or remaining <= 1:
        return None
    left = deadline - now
    share = max(left / remaining, _MIN_ATTEMPT)
    return now + share if share < left else None


def _system_roots() -> ssl.SSLContext:
    global _proxy_tls
    if _proxy_tls is None:
        _proxy_tls = ssl.create_default_context()
    return _proxy_tls


def _why(exc: BaseException) -> str:
    """An error's message, or its name when it has none (a bare ConnectionResetError)."""
    return str(exc) or type(exc).__name__
