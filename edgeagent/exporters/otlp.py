"""The `otlp` exporter: OTLP over gRPC, sending the queued bytes as they are.

Errors follow the OTLP specification's table: UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED,
CANCELLED, OUT_OF_RANGE and DATA_LOSS are retryable; RESOURCE_EXHAUSTED only when the server
sends RetryInfo (it then says when to come back); every other code is permanent. A
refusal saying the message is over the server's maximum size (or more than an edgeagent hub's
queue holds even when empty), whatever its code, RESOURCE_EXHAUSTED with RetryInfo too, is split
in halves, as HTTP's 413 is (otelcol drops the whole batch or retries the same bytes); so is an
HTTP 413 without a gRPC status, a proxy's body limit before the server (nginx's
client_max_body_size), which grpc-go reads as UNKNOWN. The metadata we send (headers, auth) is
masked in the server's details before anyone sees them.

The calls go over our own gRPC client (`grpc_client.py`, on h2), one connection per exporter
(per resolved address with `balancer_name: round_robin`), so every grpc-encoding otelcol's
receiver takes is offered: gzip (the default), zstd, snappy, none. `keepalive` is grpc-go's
client keepalive (its `time` at least 10 s, as grpc-go enforces); `wait_for_ready` makes a call
wait for a connection until its `timeout` instead of failing UNAVAILABLE at once; `authority`
(else `tls.server_name_override`) is the :authority header. `read_buffer_size` and
`write_buffer_size` size each connection socket's receive and send buffers (as on the receiver;
grpc-go's are its transport's buffers); `user_agent` goes before edgeagent's own in the
user-agent header, as grpc-go puts it before its own; `middlewares` takes the empty list only.

The endpoint is read as configgrpc and grpc-go read it (`grpc_target.py`): host:port with its port
required, or a unix socket, dialled with no proxy and `localhost` as its authority.

The proxy is grpc-go's: HTTPS_PROXY / NO_PROXY, read at start, with an HTTP CONNECT tunnel
(`grpc_dial.py`); a proxy of a scheme gRPC cannot tunnel through is logged once at start, and
every export then fails retryable (the data stays queued) with an error naming it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, Literal

from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from pydantic import Field, field_validator, model_validator

from edgeagent import __version__
from edgeagent.auth import AuthConfig, Authenticator
from edgeagent.auth import resolve as resolve_authenticator
from edgeagent.component import ComponentConfig, Factory, null_keeps_defaults, optional_block
from edgeagent.config.types import Duration
from edgeagent.errors import PermanentError, RetryableError, ThrottledError
from edgeagent.exporters.bandwidth import Pacer
from edgeagent.exporters.chain import SendResult, partial_success, refused_for_size
from edgeagent.exporters.config import ExporterConfig
from edgeagent.exporters.encoding import grpc_compress
from edgeagent.exporters.grpc_client import Channel
from edgeagent.exporters.grpc_connection import ChannelSettings, GrpcStatusError
from edgeagent.exporters.grpc_dial import environment_proxy, host_port, proxy_address
from edgeagent.exporters.grpc_target import GrpcTarget, parse
from edgeagent.grpc_status import StatusCode
from edgeagent.http1.dial import UnsupportedProxyError
from edgeagent.instrumentation import rpc_client_observer
from edgeagent.masking import mask
from edgeagent.middleware import MiddlewareConfig, check_client_middlewares
from edgeagent.runtime.reload import Reloading
from edgeagent.signals import Signal
from edgeagent.tls import TlsClientConfig, check_grpc_client, reloading_client_context

log = logging.getLogger(__name__)
_RETRYABLE = {StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED, StatusCode.ABORTED,
              StatusCode.CANCELLED, StatusCode.OUT_OF_RANGE, StatusCode.DATA_LOSS}
# codes that say the link (not the server) failed: they count towards going offline
_LINK_FAILURES = {StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED}
_MIN_KEEPALIVE_TIME = 10.0  # grpc-go raises a client's keepalive time to this


class KeepaliveConfig(ComponentConfig):
    """configgrpc's client keepalive; its defaults are otelcol's (`enabled: false` turns it off)."""
    time: Duration = 10.0
    timeout: Duration = 10.0
    permit_without_stream: bool = False


class OtlpGrpcConfig(ExporterConfig):
    endpoint: str | None = None
    timeout: Duration = 5.0
    compression: Literal["gzip", "zstd", "snappy", "none", ""] = "gzip"
    tls: TlsClientConfig = Field(default_factory=TlsClientConfig)
    auth: AuthConfig | None = None
    keepalive: KeepaliveConfig | None = Field(default_factory=KeepaliveConfig)
    balancer_name: Literal["pick_first", "round_robin", ""] = "round_robin"  # otelcol's; "" is grpc's pick_first
    authority: str = ""
    wait_for_ready: bool = False
    read_buffer_size: int = 0  # the socket's SO_RCVBUF; 0 or less: the system's
    write_buffer_size: int = 0  # the socket's SO_SNDBUF; 0 or less: the system's
    user_agent: str = ""  # put before edgeagent's own, as grpc-go puts it before its own
    middlewares: list[MiddlewareConfig] = Field(default_factory=list)

    _check_middlewares = field_validator("middlewares")(lambda cls, v: check_client_middlewares(v, "a gRPC"))

    _check_tls = field_validator("tls")(lambda cls, value: check_grpc_client(value))
    # `key:` alone: tls keeps its defaults and keepalive stays on with its own, as in otelcol
    _null_tls = null_keeps_defaults("tls")
    _keepalive_switch = field_validator("keepalive", mode="before")(lambda cls, value: optional_block(value))

    @field_validator("user_agent")
    @classmethod
    def _user_agent_sendable(cls, value: str) -> str:
        """It goes into the calls' headers and a proxy's CONNECT head: a CR or LF would add a header,
        and an HTTP/2 field value must not start or end in whitespace (a server drops the call)."""
        if any(c < " " and c != "\t" or c == "\x7f" for c in value):
            raise ValueError(f"user_agent {value!r} holds a control character: remove it (tabs are allowed)")
        if value != value.strip(" \t"):
            raise ValueError(f"user_agent {value!r} starts or ends with whitespace, which an HTTP/2 header value "
                             f"must not: remove it")
        return value

    @field_validator("endpoint")
    @classmethod
    def _readable_endpoint(cls, value: str | None) -> str | None:
        if value:
            parse(value)  # a ValueError names what is wrong and the fix
        return value

    @model_validator(mode="after")
    def _check(self) -> OtlpGrpcConfig:
        if self.endpoint is None:
            raise ValueError("endpoint is required: set endpoint (e.g. collector:4317), or \"\" to only buffer")
        return self

    def config_warnings(self) -> list[str]:
        warnings = super().config_warnings()
        if not self.endpoint:
            warnings.append("endpoint is empty: no upstream is configured, data is buffered until one is set")
        return warnings

    def target(self) -> GrpcTarget:
        return parse(self.endpoint) if self.endpoint else GrpcTarget()

    def plaintext(self) -> bool:
        """An http:// scheme means plaintext and https:// TLS; else tls.insecure decides, unless a CA
        is given (ca_file, ca_pem): then TLS, as configgrpc dials whenever configtls gives a config."""
        target = self.target()
        return self.tls.dropped() if target.plaintext is None else target.plaintext

    def address(self) -> tuple[str, int]:
        target = self.target()
        return target.host, target.port

    def channel_settings(self) -> ChannelSettings:
        target = self.target()
        keepalive = self.keepalive
        # grpc-go names every unix target `localhost` (its resolver's authority, and TLS's server name)
        host = "localhost" if target.unix_path else target.host
        return ChannelSettings(
            host=host, port=target.port, unix_path=target.unix_path, server_hostname=self.tls.server_name_override,
            authority=self.authority or self.tls.server_name_override or (host if target.unix_path else ""),
            balancer=self.balancer_name or "pick_first",
            keepalive_time=max(keepalive.time, _MIN_KEEPALIVE_TIME) if keepalive and keepalive.time > 0 else 0.0,
            keepalive_timeout=keepalive.timeout if keepalive and keepalive.timeout > 0 else 20.0,  # grpc-go's for 0
            keepalive_without_calls=bool(keepalive and keepalive.permit_without_stream),
            user_agent=" ".join(filter(None, (self.user_agent, f"edgeagent/{__version__}"))),
            receive_buffer=max(self.read_buffer_size, 0), send_buffer=max(self.write_buffer_size, 0))


class OtlpGrpcExporter:
    """Sends one request over a shared channel; raises RetryableError or PermanentError."""

    def __init__(self, component_id: str, config: OtlpGrpcConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self.host = host
        self.configured = bool(config.endpoint)
        self._channel: Channel | None = None
        self._context: Reloading[Any] | None = None
        self._metadata = tuple((key.lower(), value) for key, value in config.headers.items())
        self._auth: Authenticator | None = None
        self._bandwidth: Pacer[bytes] = Pacer(config.rate_limit)
        self._encoding = "" if config.compression in ("none", "") else config.compression
        self._observe = rpc_client_observer(None, "", "")
        self._proxy = self._environment_proxy()

    def describe(self) -> str:
        return self.config.endpoint or "none"

    async def start(self) -> None:
        self._auth = resolve_authenticator(self.host, self.config.auth)
        if not self.configured:
            return
        plaintext = self.config.plaintext()
        if plaintext and getattr(self._auth, "requires_transport_security", False):
            # grpc-go's words, with which otelcol refuses to start such an exporter
            raise ValueError(f"exporters::{self.id}: grpc: the credentials require transport level security: "
                             f"{self.config.auth.authenticator if self.config.auth else ''} sends a secret; "
                             f"remove tls::insecure")
        self._proxy = self._environment_proxy()
        settings = dataclasses.replace(self.config.channel_settings(), proxy=self._proxy)
        self._check_proxy()
        if not plaintext:
            # https:// with tls.insecure: TLS with the system roots, as otelcol
            tls = self.config.tls.model_copy(update={"insecure": False})
            self._context = reloading_client_context(tls, alpn=["h2"])
            settings = dataclasses.replace(settings, ssl_context=self._context.value)
        # otelgrpc's server.address: a unix target's path (an abstract one's name), with no port
        address, port = ((settings.unix_path.removeprefix("\0"), "") if settings.unix_path
                         else (settings.host, str(settings.port)))
        self._observe = rpc_client_observer(getattr(self.host, "metrics", None), address, port)
        self._channel = Channel(settings)

    def _environment_proxy(self) -> str:
        """The proxy grpc-go's TCP dialer would take; a unix socket is dialled directly."""
        target = self.config.target()
        return environment_proxy(host_port(target.host, target.port)) if target.host else ""

    def _check_proxy(self) -> None:
        if not self._proxy:
            return
        try:
            proxy_address(self._proxy)
        except UnsupportedProxyError as exc:
            log.error("the proxy HTTPS_PROXY names cannot be used; nothing is sent and the data stays queued: fix "
                      "the variable or exempt the endpoint with NO_PROXY",
                      extra={"exporter": self.id, "error": str(exc)})

    def upstream_addresses(self) -> list[tuple[str, int]]:
        """host:port where connections go: the endpoint's, or its proxy's."""
        if not self.configured or self.config.target().unix_path:
            return []  # nothing is connected to, or no TCP address: a unix socket is not watched
        try:
            return [proxy_address(self._proxy) if self._proxy else self.config.address()]
        except UnsupportedProxyError:
            return []  # nothing is ever connected to

    async def shutdown(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        metadata = self._metadata
        if self._auth is not None:
            metadata += tuple((key.lower(), value) for key, value in self._auth.client_headers().items())
        return metadata

    async def pace(self, signal: Signal, body: bytes) -> None:
        """Wait until `rate_limit` lets this request on the wire (the chain awaits it before the timeout)."""
        await self._bandwidth.pace(body, self._compressed)

    async def _compressed(self, body: bytes) -> bytes:
        return await asyncio.to_thread(grpc_compress, self._encoding, body) if self._encoding else body

    async def send(self, signal: Signal, body: bytes) -> SendResult:
        if self._channel is None:
            raise RetryableError(f"no endpoint configured for {signal.label}", connection=True)
        if self._context is not None:
            context = self._context.get()
            if context is not self._channel.ssl_context:
                self._channel.use_ssl_context(context)  # new certificates: new connections
        message = await self._bandwidth.wire(body, self._compressed)
        method = f"{signal.grpc_service}/Export"
        metadata = self._call_metadata()
        started, status = time.perf_counter(), "CANCELLED"
        try:
            response = await self._channel.unary(
                f"/{method}", message, timeout=self.config.timeout, metadata=metadata, encoding=self._encoding,
                wait_for_ready=self.config.wait_for_ready)
            status = "OK"
        except GrpcStatusError as error:
            status = error.code.name
            raise classify(error, [value for _, value in metadata]) from None
        finally:
            self._observe(time.perf_counter() - started, method, status)
        return partial_success(signal, response)


def classify(error: GrpcStatusError, secrets: list[str]) -> Exception:
    """The one place that maps a gRPC status to what the sender must do; `secrets` are masked in the details."""
    code = error.code
    details = mask(error.message, secrets)
    # no connection at all (refused, unreachable, a name that does not resolve): nothing answered
    said = "upstream unreachable" if error.unanswered else "upstream answered"
    message = f"{said} {code.name}: {details}".rstrip(": ")
    delay = _retry_delay(error.trailers)
    # a size limit (the server's words, whatever the code, or a proxy's HTTP 413): a smaller request gets
    # through, so the chain splits it as on otlphttp's 413; the same bytes would be refused for ever
    if error.from_server and refused_for_size(error.message) or error.http_status == 413:
        return PermanentError(f"upstream rejected the data with {code.name}: {details}", status=code.name,
                              body=details.encode(), too_large=True)
    if code == StatusCode.RESOURCE_EXHAUSTED and delay is not None:
        return ThrottledError(message, retry_after=delay)
    if code in _RETRYABLE:
        return RetryableError(message, retry_after=delay, connection=code in _LINK_FAILURES and delay is None,
                              unanswered=error.unanswered, timed_out=code == StatusCode.DEADLINE_EXCEEDED)
    return PermanentError(f"upstream rejected the data with {code.name}: {details}", status=code.name,
                          body=details.encode())


def _retry_delay(metadata: list[tuple[str, str | bytes]]) -> float | None:
    """The RetryInfo delay carried in `grpc-status-details-bin`, in seconds (a negative one is 0), if any."""
    for key, value in metadata:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay: float = info.retry_delay.seconds + info.retry_delay.nanos / 1e9  # google.rpc has no types
                return max(0.0, delay)
    return None


FACTORY = Factory("otlp_grpc", OtlpGrpcConfig, OtlpGrpcExporter)
