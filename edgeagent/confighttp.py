"""otelcol's confighttp server settings, for the servers built on edgeagent's HTTP/1.1 server
(the OTLP/HTTP receiver, the health check), and the parts of the server they make: the listener,
the wait for a request, the response headers, the CORS and auth checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from edgeagent import netaddr, tls
from edgeagent.auth import AuthConfig
from edgeagent.component import ComponentConfig, optional_block
from edgeagent.config.types import Duration
from edgeagent.cors import Cors, CorsConfig
from edgeagent.http1.server import Middleware, Request, Response, ResponseHook, Server
from edgeagent.middleware import MiddlewareConfig, check_server_middlewares
from edgeagent.tls import TlsServerConfig

_NO_TIMEOUT = 365 * 86400.0
DEFAULT_MAX_REQUEST_BODY_SIZE = 20 * 1024 * 1024
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class ServerAuthConfig(AuthConfig):
    """confighttp's server `auth`: the authenticator, and `request_params`, query parameters it
    reads as headers of the same name (the query's value wins over the header's)."""
    request_params: list[str] = Field(default_factory=list)


def auth_sources(request: Request, params: list[str]) -> Mapping[str, str]:
    """What a server's authenticator is shown, as confighttp's authInterceptor shows it: the request's
    headers, each of `params` found in the query string in place of the header of that name."""
    found = [name for name in params if name in request.query] if params else []
    if not found:
        return request.headers
    sources = request.headers.copy()
    for name in found:
        sources[name] = request.query[name]
    return sources


class HttpKeepaliveConfig(ComponentConfig):
    idle_timeout: Duration = Field(default=60.0, ge=0)


class HttpServerConfig(ComponentConfig):
    """confighttp.ServerConfig: what every HTTP server of otelcol takes (a subclass sets endpoint's default)."""

    transport: str = "tcp"  # before endpoint, whose validation depends on it
    endpoint: str = ""
    dialer: netaddr.DialerConfig | None = None
    max_request_body_size: int = DEFAULT_MAX_REQUEST_BODY_SIZE
    # otelcol's confighttp defaults: headers within a minute, no limit on the whole request
    read_header_timeout: Duration = Field(60.0, ge=0)
    read_timeout: Duration = Field(0.0, ge=0)
    # otelcol's default: the answer must be written within 30s of the request's headers (0: no limit)
    write_timeout: Duration = Field(30.0, ge=0)
    keepalive: HttpKeepaliveConfig | None = Field(default_factory=HttpKeepaliveConfig)
    include_metadata: bool = False
    cors: CorsConfig | None = None
    response_headers: dict[str, str] = Field(default_factory=dict)
    # the Content-Encodings accepted ("" is none); unset: every one otelcol knows
    compression_algorithms: list[str] | None = None
    tls: TlsServerConfig | None = None
    auth: ServerAuthConfig | None = None
    middlewares: list[MiddlewareConfig] = Field(default_factory=list)

    _check_transport = field_validator("transport")(lambda cls, v: netaddr.check_transport(v))
    _check_endpoint = field_validator("endpoint")(netaddr.check_endpoint_field)
    _check_middlewares = field_validator("middlewares")(lambda cls, v: check_server_middlewares(v, "an HTTP"))

    @field_validator("max_request_body_size")
    @classmethod
    def _default_when_not_positive(cls, value: int) -> int:
        return value if value > 0 else DEFAULT_MAX_REQUEST_BODY_SIZE  # as otelcol's ToServer

    @field_validator("keepalive", mode="before")
    @classmethod
    def _keepalive_switch(cls, value: Any) -> Any:
        """`keepalive:` alone keeps the defaults; `enabled: false` leaves idle connections to read_timeout."""
        return optional_block(value)

    @field_validator("response_headers", mode="before")
    @classmethod
    def _headers_as_text(cls, value: Any) -> Any:
        """A map, or otelcol's list of {name, value} pairs; values as text."""
        if isinstance(value, list):
            pairs = [(item.get("name"), item.get("value")) for item in value if isinstance(item, dict)]
            if len(pairs) != len(value) or any(not isinstance(name, str) for name, _ in pairs):
                raise ValueError("response_headers: give a map of header: value, or a list of {name, value}")
            value = dict(pairs)
        if isinstance(value, dict):
            return {str(k): ("" if v is None else str(v)) for k, v in value.items()}
        return value

    @field_validator("response_headers")
    @classmethod
    def _headers_sendable(cls, value: dict[str, str]) -> dict[str, str]:
        """Names are tokens and values hold no control character (a CR or LF would add a header)."""
        for name, text in value.items():
            if not name or not _TOKEN.issuperset(name) or any(c < " " and c != "\t" or c == "\x7f" for c in text):
                raise ValueError(f"response_headers: {name!r}: {text!r} cannot be sent as an HTTP header")
        return value

    @field_validator("compression_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str] | None) -> list[str] | None:
        known = ("", "gzip", "zstd", "zlib", "snappy", "deflate", "lz4", "x-snappy-framed")
        unknown = [name for name in value or () if name not in known]
        if unknown:
            raise ValueError(f"compression_algorithms: {unknown} unknown; use some of {list(known)}")
        return value

    def config_warnings(self) -> list[str]:
        warnings = [f"tls::{warning}" for warning in self.tls.config_warnings()] if self.tls is not None else []
        warnings += self.cors.config_warnings() if self.cors is not None else []
        if self.dialer is not None:
            warnings.append(netaddr.DIALER_WARNING)
        return warnings

    def content_encodings(self) -> frozenset[str] | None:
        """The Content-Encoding values accepted, or None for all; "" also means identity (and none)."""
        if self.compression_algorithms is None:
            return None
        names = set(self.compression_algorithms)
        if "" in names:
            names |= {"identity", "none"}
        if "gzip" in names:
            names.add("x-gzip")
        return frozenset(names)

    def idle_timeout(self) -> float:
        """How long a connection may wait for its next request (otelcol: idle_timeout, else read_timeout)."""
        if self.keepalive is not None and self.keepalive.idle_timeout:
            return self.keepalive.idle_timeout
        return self.read_timeout


def wait_for_request(config: HttpServerConfig) -> float:
    """The server keeps one timer from the connection's start (or the last answer) until the next
    request's headers are complete, where otelcol has two: idle_timeout for the wait and
    read_header_timeout for the headers (each falling back to read_timeout). The shorter bounds
    both, so neither limit is ever exceeded."""
    header = config.read_header_timeout or config.read_timeout
    idle = config.idle_timeout()
    return min((limit for limit in (header, idle) if limit), default=_NO_TIMEOUT)


async def listen(server: Server, address: netaddr.Address, config: HttpServerConfig) -> None:
    """Serves `server` on `address` (netaddr.listen's), over TLS when the config has `tls`."""
    ssl_context = tls.server_ssl_context(config.tls) if config.tls is not None else None
    if address.sock is not None:
        await server.listen(sock=address.sock, ssl_context=ssl_context)
    else:
        await server.listen(host=address.host, port=address.port, ssl_context=ssl_context, backlog=netaddr.BACKLOG)


def response_headers(headers: dict[str, str]) -> ResponseHook:
    """otelcol's response_headers: on every answer, unless the answer sets that header itself.
    A value goes out as UTF-8, as otelcol sends it (the server writes header text as latin-1)."""
    wire = {name: value.encode().decode("latin-1") for name, value in headers.items()}

    def add(request: Request, response: Response) -> None:
        for name, value in wire.items():
            response.headers.setdefault(name, value)

    return add


def server_middlewares(config: HttpServerConfig) -> list[Middleware]:
    """The middleware of a server's `cors`, when it allows an origin. (`write_timeout` is the
    server's own: an answer not written within it of the request's headers is never written,
    the connection is cut, as Go's, and the client retries; the handler finishes on its own.)"""
    if config.cors is not None and config.cors.allowed_origins:
        return [Cors(config.cors).middleware()]
    return []
