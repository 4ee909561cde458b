"""The `otlp` receiver: OTLP over gRPC (default port 4317) and HTTP (default port 4318)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator

from edgeagent import netaddr
from edgeagent.auth import AuthConfig
from edgeagent.component import ComponentConfig, Factory, null_keeps_defaults
from edgeagent.config.types import Duration, Uint32
from edgeagent.confighttp import HttpServerConfig
from edgeagent.middleware import MiddlewareConfig, check_server_middlewares
from edgeagent.receivers.otlp_grpc import GrpcServer
from edgeagent.receivers.otlp_http import HttpServer
from edgeagent.tls import TlsServerConfig, check_grpc_server

log = logging.getLogger(__name__)


class ServerParametersConfig(ComponentConfig):
    """grpc-go's keepalive.ServerParameters; 0 keeps grpc-go's default (no age limit, pings after 2h
    of silence, 20s to answer), except max_connection_idle: 5 minutes rather than never."""

    max_connection_idle: Duration = Field(0.0, ge=0)
    max_connection_age: Duration = Field(0.0, ge=0)
    max_connection_age_grace: Duration = Field(0.0, ge=0)
    time: Duration = Field(0.0, ge=0)
    timeout: Duration = Field(0.0, ge=0)


class EnforcementPolicyConfig(ComponentConfig):
    """grpc-go's keepalive.EnforcementPolicy: how often clients may ping; 0 keeps grpc's 5 minutes."""

    min_time: Duration = Field(0.0, ge=0)
    permit_without_stream: bool = False


class GrpcKeepaliveConfig(ComponentConfig):
    server_parameters: ServerParametersConfig | None = None
    enforcement_policy: EnforcementPolicyConfig | None = None

    _empty_means_defaults = null_keeps_defaults("server_parameters", "enforcement_policy")


class GrpcConfig(ComponentConfig):
    transport: str = "tcp"  # before endpoint, whose validation depends on it
    endpoint: str = "localhost:4317"
    dialer: netaddr.DialerConfig | None = None
    max_recv_msg_size_mib: int = Field(4, ge=0)  # 0: grpc's default, 4
    max_concurrent_streams: Uint32 = Field(0, ge=0)
    read_buffer_size: int = Field(0, ge=0)  # the socket's SO_RCVBUF; 0: the system's
    write_buffer_size: int = Field(0, ge=0)  # the socket's SO_SNDBUF; 0: the system's
    keepalive: GrpcKeepaliveConfig | None = None
    include_metadata: bool = False
    tls: TlsServerConfig | None = None
    auth: AuthConfig | None = None
    middlewares: list[MiddlewareConfig] = Field(default_factory=list)

    _check_transport = field_validator("transport")(lambda cls, v: netaddr.check_transport(v))
    _check_endpoint = field_validator("endpoint")(netaddr.check_endpoint_field)
    _check_middlewares = field_validator("middlewares")(lambda cls, v: check_server_middlewares(v, "a gRPC"))
    _check_tls = field_validator("tls")(lambda cls, v: check_grpc_server(v))


class HttpConfig(HttpServerConfig):
    endpoint: str = "localhost:4318"
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"

    @field_validator("traces_url_path", "metrics_url_path", "logs_url_path")
    @classmethod
    def _sanitized(cls, value: str) -> str:
        """otelcol's SanitizedURLPath: the path of the URL given, made absolute (`v1/traces` is served
        at /v1/traces, a query is no part of it)."""
        path = unquote(urlsplit(value).path)
        return path if path.startswith("/") else "/" + path


class ProtocolsConfig(ComponentConfig):
    grpc: GrpcConfig | None = None
    http: HttpConfig | None = None
    UNSET_STAYS_UNSET = frozenset({"grpc", "http"})  # hold defaults unwritten; only a written one is served

    _empty_means_defaults = null_keeps_defaults("grpc", "http")


class OtlpReceiverConfig(ComponentConfig):
    protocols: ProtocolsConfig

    def config_warnings(self) -> list[str]:
        if self.protocols.grpc is None and self.protocols.http is None:
            return ["no protocol is enabled: add protocols::grpc or protocols::http"]
        warnings = [f"protocols::{name}::tls: {warning}" for name in ("grpc", "http")
                    if (protocol := getattr(self.protocols, name)) is not None and protocol.tls is not None
                    for warning in protocol.tls.config_warnings()]
        warnings += [f"protocols::{name}::{netaddr.DIALER_WARNING}" for name in ("grpc", "http")
                     if (protocol := getattr(self.protocols, name)) is not None and protocol.dialer is not None]
        http = self.protocols.http
        if http is not None and http.cors is not None:
            warnings += [f"protocols::http::{warning}" for warning in http.cors.config_warnings()]
        return warnings


class OtlpReceiver:
    """Serves gRPC and HTTP; every request goes to the consumer of its signal."""

    def __init__(self, component_id: str, config: OtlpReceiverConfig, host: Any):
        self.id = component_id
        self.config = config
        self.host = host
        self._servers: list[Any] = []

    async def start(self) -> None:
        protocols = self.config.protocols
        if "grpc" in protocols.model_fields_set and protocols.grpc is not None:
            self._servers.append(GrpcServer(self.id, protocols.grpc, self.host))
        if "http" in protocols.model_fields_set and protocols.http is not None:
            self._servers.append(HttpServer(self.id, protocols.http, self.host))
        for server in self._servers:
            await server.start()

    async def stop_accepting(self) -> None:
        """Stop taking new requests; requests already inside finish their commit. Both protocols at
        once: each gives its requests in progress a grace period."""
        results = await asyncio.gather(*(server.stop() for server in self._servers), return_exceptions=True)
        for result in results:  # both stopped; the first failure is reported
            if isinstance(result, BaseException):
                raise result

    async def shutdown(self) -> None:
        await self.stop_accepting()
        self._servers = []


FACTORY = Factory("otlp", OtlpReceiverConfig, OtlpReceiver)
