"""The proxy a request goes through when none is configured, from the environment as Go's
net/http ProxyFromEnvironment (golang.org/x/net/http/httpproxy) reads it, which otelcol's
HTTP client uses.

- HTTP_PROXY for http:// URLs, HTTPS_PROXY for https:// ones, each upper case before lower case
  (`http_proxy`), an empty value as unset; a value without a scheme is an http:// proxy.
- Never proxied: `localhost` and loopback addresses, and a host NO_PROXY matches. NO_PROXY is a
  comma-separated list, each entry one of:
  `*`: every host; an IP range in CIDR notation (`10.0.0.0/8`, `fd00::/8`); an IP address
  (`10.1.2.3`, `2001:db8::1`); a domain (`example.com`: it and every name under it;
  `.example.com` or `*.example.com`: the names under it only). An address or a domain may carry
  a port (`10.1.2.3:4318`, `[2001:db8::1]:443`, `example.com:8080`): then it matches that port
  only, the URL's or its scheme's default (80, 443); without, any port. Addresses match
  addresses and domains match names: `example.com` never matches an address, even an IPv6 one
  whose zone reads like a name. Entries are read case-insensitively; international names match
  their ASCII (punycode) form. What cannot be read is ignored.
- Not followed: Go's refusal of HTTP_PROXY when REQUEST_METHOD is set (a CGI script, where a
  request header could set it); the agent never runs as one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # IPv4 addresses written as IPv6, which Go takes as IPv4


@dataclass(frozen=True)
class _Domain:
    """One NO_PROXY entry naming a domain."""

    suffix: str  # with its leading dot
    port: str  # "" for any
    exact: bool  # the name itself matches too (an entry without a leading dot or `*.`)

    def matches(self, host: str, port: str) -> bool:
        named = host.endswith(self.suffix) or (self.exact and host == self.suffix[1:])
        return named and self.port in ("", port)


class NoProxy:
    """The hosts NO_PROXY keeps away from the proxy."""

    def __init__(self, value: str):
        self.everything = False
        self.networks: list[Network] = []
        self.addresses: list[tuple[Address, str]] = []  # (address, port or "")
        self.domains: list[_Domain] = []
        for entry in value.split(","):
            self._add(entry.strip().lower())

    def _add(self, entry: str) -> None:
        if not entry:
            return
        if entry == "*":
            self.everything = True
            return
        if (network := _network(entry)) is not None:
            self.networks.append(network)
            return
        host, port = _split_host_port(entry) or (entry, "")
        if not host:
            return  # ":80": no host, ignored
        if (address := _address(host, zone=False)) is not None:
            self.addresses.append((address, port))
            return
        if host.startswith("*."):
            host = host[1:]
        exact = not host.startswith(".")
        self.domains.append(_Domain(_ascii("." + host if exact else host), port, exact))

    def bypasses(self, host: str, port: str) -> bool:
        """Whether a request to `host` (as a URL holds it, without brackets) on `port` goes direct."""
        if host == "localhost":
            return True
        address = _address(host, zone=True)
        if address is not None and address.is_loopback:
            return True
        if self.everything:
            return True
        if address is not None:
            return any(address in network for network in self.networks) \
                or any(address == entry and wanted in ("", port) for entry, wanted in self.addresses)
        name = _ascii(host.strip().lower())
        return any(domain.matches(name, port) for domain in self.domains)


class EnvironmentProxies:
    """The environment's proxies for http:// and https:// URLs, and its NO_PROXY."""

    def __init__(self, environ: Mapping[str, str]):
        self.http = _first(environ, "HTTP_PROXY", "http_proxy")
        self.https = _first(environ, "HTTPS_PROXY", "https_proxy")
        self.no_proxy = NoProxy(_first(environ, "NO_PROXY", "no_proxy"))

    def for_url(self, url: str) -> str | None:
        """The proxy URL for a request to `url`; None: straight to it."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else ""
        if not proxy or self.no_proxy.bypasses(parts.hostname or "", _port(parts) or _DEFAULT_PORTS[scheme]):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"


def _first(environ: Mapping[str, str], *names: str) -> str:
    return next((value for name in names if (value := environ.get(name, ""))), "")


def _port(parts: SplitResult) -> str:
    """The URL's port as written (Go's URL.Port), "" without one."""
    authority = parts.netloc.rpartition("@")[2]
    colon = authority.rfind(":")
    return authority[colon + 1:] if colon > authority.rfind("]") else ""


def _split_host_port(text: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: `host:port` or `[host]:port` apart; None when it is neither."""
    colon = text.rfind(":")
    if colon < 0:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or end + 1 != colon:
            return None
        host, after_open, after_close = text[1:end], 1, end + 1
    else:
        host, after_open, after_close = text[:colon], 0, 0
        if ":" in host:
            return None
    if "[" in text[after_open:] or "]" in text[after_close:]:
        return None
    return host, text[colon + 1:]


def _address(text: str, *, zone: bool) -> Address | None:
    """The IP address `text` is, IPv4 in IPv6 as IPv4, without its zone; None when it is none. A
    zone (`fe80::1%eth0`) is taken in a URL's host (Go's netip), not in an entry (Go's net.ParseIP)."""
    if "%" in text and not zone:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            address = ipaddress.IPv6Address(text.partition("%")[0])
        return address.ipv4_mapped or address
    return address


def _network(entry: str) -> Network | None:
    """The range a CIDR entry holds, as Go's net.ParseCIDR reads one (an IPv4 range written in
    IPv6 is the IPv4 range); None for anything else."""
    address, slash, prefix = entry.partition("/")
    if not slash or not prefix.isdigit() or not prefix.isascii() or "%" in address:
        return None
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _ascii(name: str) -> str:
    """A name's ASCII form, its international labels in punycode (Go's idna.Lookup.ToASCII); as
    it is when that fails, as Go keeps it."""
    if name.isascii():
        return name
    try:
        return ".".join(label if label.isascii() else label.encode("idna").decode("ascii")
                        for label in name.split("."))
    except UnicodeError:
        return name
