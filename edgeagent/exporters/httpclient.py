"""The HTTP client of otelcol's confighttp ClientConfig, as edgeagent's own HTTP/1.1 client
(edgeagent.http1.client) makes it: the connection pool (`keepalive`, `max_conns_per_host`),
`proxy_url`, `cookies`, `compression_params`, client `middlewares` and the HTTP/2 keys. The
otlp_http exporter's config mixes these keys in.

Connections (Go's http.Transport, which otelcol configures):
- `max_conns_per_host`: at most that many connections to a host, busy or idle (0: no limit); a
  request beyond waits for one. A new connection is opened only when no idle one is there.
- `keepalive` (`{enabled: false}` turns keep-alives off: a connection per request, each saying
  `Connection: close`): `idle_conn_timeout` closes a connection idle that long (0: never);
  `max_idle_conns` (0: no limit) and `max_idle_conns_per_host` (0: Go's default, 2) cap the idle
  connections kept, closing one released beyond the per-host cap and the oldest beyond the total,
  as Go does. Unset, edgeagent keeps its own pool: idle connections closed after 15 s (otelcol's
  default is 90 s) and not capped (otelcol's defaults are 100 in all, 2 per host, which makes a
  queue with 10 consumers reconnect after every burst).
- `proxy_url` (http:// or https://, credentials in it sent as Proxy-Authorization; an https://
  proxy is verified with the `tls` block, the system roots without, as Go's Transport): HTTPS goes
  through a CONNECT tunnel, HTTP as an absolute-form request, as Go. A socks5:// or socks5h://
  proxy (port 1080 unless given; the two alike, as in Go: the proxy resolves the target's name)
  carries both through a SOCKS5 connection, credentials in the URL sent as RFC 1929
  username/password (edgeagent.http1.socks). Without it, as Go's ProxyFromEnvironment,
  HTTPS_PROXY / HTTP_PROXY (either case, SOCKS5 URLs too) are used unless NO_PROXY matches the
  host (a name, a domain, an address or a CIDR range, each but a range with or without a port)
  or the host is localhost or a loopback address (edgeagent.http1.proxyenv). An environment proxy
  of another scheme (`socks4://`) gets nothing: each export fails with an error naming it and the
  schemes there are, logged once, and the data stays queued (edgeagent.http1.dial; Go would
  speak HTTP to it).
- `cookies` (present: a cookie jar, as Go's net/http/cookiejar, IP-address hosts included);
  absent or `cookies:` alone (null), no cookie is kept or sent back, as in otelcol.

edgeagent speaks HTTP/1.1 only. `force_attempt_http2` is accepted: otelcol only uses HTTP/2 over
https:// with a server offering it, and the data sent is the same. `http2_read_idle_timeout` is
otelcol's ping health check of HTTP/2 connections: with only http:// endpoints it has no effect
there either (Go speaks no cleartext HTTP/2) and is accepted with a warning; with an https://
endpoint otelcol would use HTTP/2 and ping, which edgeagent cannot, so it is refused.
`http2_ping_timeout` only matters with it, as in otelcol.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edgeagent.component import ComponentConfig, null_keeps_defaults, optional_block
from edgeagent.config.types import Duration
from edgeagent.http1.pool import PoolSettings
from edgeagent.http1.proxyenv import EnvironmentProxies
from edgeagent.middleware import MiddlewareConfig, check_client_middlewares

_GO_IDLE_PER_HOST = 2  # net/http.DefaultMaxIdleConnsPerHost
_KEEPALIVE = 15.0  # seconds an idle connection is kept when unset


class KeepaliveClientConfig(ComponentConfig):
    """confighttp's client `keepalive`; None keeps edgeagent's pool (see the module note)."""
    idle_conn_timeout: Duration | None = Field(None, ge=0)
    max_idle_conns: int | None = Field(None, ge=0)
    max_idle_conns_per_host: int | None = Field(None, ge=0)


class CookiesConfig(ComponentConfig):
    """confighttp's `cookies`: present turns the cookie jar on; it has no keys of its own."""


class CompressionParams(ComponentConfig):
    level: int = 0  # 0: the default level


class HttpClientConfig(ComponentConfig):
    """The confighttp ClientConfig keys beyond endpoint, headers, timeout, tls, auth and buffers."""

    proxy_url: str = ""
    max_conns_per_host: int = Field(0, ge=0)
    keepalive: KeepaliveClientConfig | None = Field(default_factory=KeepaliveClientConfig)
    cookies: CookiesConfig | None = Field(None, validate_default=False)  # unset or null: no jar; `cookies: {}`: a jar
    compression_params: CompressionParams = Field(default_factory=CompressionParams)
    middlewares: list[MiddlewareConfig] = Field(default_factory=list)
    force_attempt_http2: bool = True
    http2_read_idle_timeout: Duration = Field(0.0, ge=0)
    http2_ping_timeout: Duration = Field(0.0, ge=0)

    _check_middlewares = field_validator("middlewares")(lambda cls, v: check_client_middlewares(v, "an HTTP"))
    _keepalive_switch = field_validator("keepalive", mode="before")(lambda cls, v: optional_block(v))
    _cookies_switch = field_validator("cookies", mode="before")(lambda cls, v: optional_block(v, False))
    _null_params = null_keeps_defaults("compression_params")

    @field_validator("proxy_url")
    @classmethod
    def _proxy(cls, url: str) -> str:
        if not url:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
            raise ValueError("proxy_url must be an absolute http://, https://, socks5:// or socks5h:// URL, "
                             "e.g. http://proxy:3128 or socks5://proxy:1080")
        return url

    @model_validator(mode="after")
    def _http2(self) -> HttpClientConfig:
        if self.http2_read_idle_timeout > 0 and any(url.startswith("https://") for url in self.client_urls()):
            raise ValueError("http2_read_idle_timeout: otelcol would speak HTTP/2 to an https:// endpoint and ping "
                             "idle connections; edgeagent's HTTP client speaks HTTP/1.1 only and cannot; remove "
                             "the key (keepalive::idle_conn_timeout closes idle connections)")
        return self

    def client_urls(self) -> list[str]:
        """The URLs this client sends to (the exporter's endpoints)."""
        return []

    def client_warnings(self) -> list[str]:
        if self.http2_read_idle_timeout > 0:
            return ["http2_read_idle_timeout has no effect, as in otelcol: every endpoint is http://, where no "
                    "HTTP/2 is spoken"]
        return []


def check_compression_level(encoding: str, level: int) -> None:
    """configcompression's ValidateParams: zlib's levels for gzip, zlib and deflate (-1 default, -2
    Huffman only, 1-9), any for zstd, none for the others; 0 is always the default."""
    if level == 0 or encoding == "zstd":
        return
    if encoding in ("gzip", "zlib", "deflate") and (level in (-1, -2) or 1 <= level <= 9):
        return
    fix = ": use -1 (zlib's default, 6), -2 (Huffman only) or 1 to 9" if encoding in ("gzip", "zlib", "deflate") \
        else f": {encoding!r} takes no level; remove compression_params"
    raise ValueError(f"compression_params::level {level} is not supported for compression {encoding!r}{fix}")


def pool_settings(config: HttpClientConfig, limit: int) -> PoolSettings:
    """The connection pool of an HTTP client with `config`'s settings; `limit` requests in flight."""
    keepalive = config.keepalive
    if keepalive is None:
        return PoolSettings(limit=limit, limit_per_route=config.max_conns_per_host, keepalive=False)
    timeout = _KEEPALIVE if keepalive.idle_conn_timeout is None else keepalive.idle_conn_timeout or None
    capped = keepalive.max_idle_conns is not None or keepalive.max_idle_conns_per_host is not None
    return PoolSettings(limit=limit, limit_per_route=config.max_conns_per_host, idle_timeout=timeout,
                        max_idle=keepalive.max_idle_conns or 0,
                        max_idle_per_route=(keepalive.max_idle_conns_per_host or _GO_IDLE_PER_HOST) if capped else 0)


class Proxies:
    """The proxy each request goes through: `proxy_url`, else the environment's as Go reads it."""

    def __init__(self, proxy_url: str):
        self._fixed = proxy_url or None
        self._environment = None if proxy_url else EnvironmentProxies(os.environ)

    def for_url(self, url: str) -> str | None:
        if self._environment is None:
            return self._fixed
        return self._environment.for_url(url)
