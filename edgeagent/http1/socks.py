"""The client side of a SOCKS5 handshake (RFC 1928) on a connection to the proxy, as Go's
net/http makes it for a `socks5://` or `socks5h://` proxy URL (its bundled x/net socks dialer):

- Methods offered: no-auth (0x00) alone; with credentials in the URL, no-auth and
  username/password (0x02), the latter sent as RFC 1929 says (each at most 255 bytes, the user
  not empty). Both schemes behave alike: the target goes as the proxy is to resolve it, a domain
  name (ATYP 3) unless the URL's host is an IP address (ATYP 1 or 4).
- Every read is of a length the protocol fixes (at most 255 + 2 bytes of a bound address), so a
  proxy cannot make us buffer; a proxy that answers what is not SOCKS5, refuses, or closes is a
  `SocksError` saying so; one that hangs is bounded by the caller's timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress

SCHEMES = ("socks5", "socks5h")
DEFAULT_PORT = 1080

_NO_AUTH, _USER_PASS, _NO_ACCEPTABLE = 0x00, 0x02, 0xFF
_REPLIES = {  # RFC 1928 section 6, in Go's words
    0x01: "general SOCKS server failure", 0x02: "connection not allowed by ruleset", 0x03: "network unreachable",
    0x04: "host unreachable", 0x05: "connection refused", 0x06: "TTL expired", 0x07: "command not supported",
    0x08: "address type not supported",
}


class SocksError(Exception):
    """The proxy refused, or answered what is not SOCKS5."""


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int,
                    credentials: tuple[str, str] | None) -> None:
    """Asks the proxy at the other end of the streams for a connection to host:port; returns once
    it is made, the streams then carrying the target's bytes."""
    methods = bytes([_NO_AUTH, _USER_PASS]) if credentials is not None else bytes([_NO_AUTH])
    writer.write(bytes([5, len(methods)]) + methods)
    await writer.drain()
    version, method = await _read(reader, 2)
    if version != 5:
        raise SocksError(f"not a SOCKS5 answer (version {version})")
    if method == _NO_ACCEPTABLE or method not in methods:
        raise SocksError("no acceptable authentication method" + ("" if credentials else
                                                                    " (the proxy may want credentials in its URL)"))
    if method == _USER_PASS and credentials is not None:
        await _authenticate(reader, writer, *credentials)
    writer.write(bytes([5, 1, 0]) + _address(host) + port.to_bytes(2, "big"))
    await writer.drain()
    version, reply, reserved, address_type = await _read(reader, 4)
    if version != 5:
        raise SocksError(f"not a SOCKS5 answer (version {version})")
    if reply != 0:
        raise SocksError(f"the proxy could not connect to {host}:{port}: "
                         f"{_REPLIES.get(reply, f'unknown error {reply}')}")
    if reserved != 0:
        raise SocksError("not a SOCKS5 answer (non-zero reserved field)")
    if address_type == 1:
        await _read(reader, 4 + 2)
    elif address_type == 4:
        await _read(reader, 16 + 2)
    elif address_type == 3:
        await _read(reader, (await _read(reader, 1))[0] + 2)
    else:
        raise SocksError(f"not a SOCKS5 answer (address type {address_type})")


async def _authenticate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str, password: str) -> None:
    """RFC 1929: version 1, the user and the password, each prefixed by its length."""
    name, secret = user.encode(), password.encode()
    if not name or len(name) > 255 or len(secret) > 255:
        raise SocksError("invalid username/password: the user must be 1 to 255 bytes, the password at most 255")
    writer.write(bytes([1, len(name)]) + name + bytes([len(secret)]) + secret)
    await writer.drain()
    version, status = await _read(reader, 2)
    if version != 1:
        raise SocksError(f"not a SOCKS5 username/password answer (version {version})")
    if status != 0:
        raise SocksError("username/password authentication failed")


def _address(host: str) -> bytes:
    """The target as CONNECT carries it: an IP address as one, any other host as a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna") if not host.isascii() else host.encode()
        if not name or len(name) > 255:
            raise SocksError(f"the host name {host!r} is too long for SOCKS5") from None
        return bytes([3, len(name)]) + name
    return bytes([1 if address.version == 4 else 4]) + address.packed


async def _read(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise SocksError("the proxy closed the connection during the SOCKS5 handshake") from exc
