"""The `otlp` receiver: OTLP over gRPC (default port 4317) and HTTP (default port 4318)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field, field_validator

from edgeagent.auth import AuthConfig
from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration, check_endpoint
from edgeagent.receivers.otlp_grpc import GrpcServer
from edgeagent.receivers.otlp_http import HttpServer
from edgeagent.tls import TlsServerConfig, check_grpc_server

log = logging.getLogger(__name__)


class GrpcConfig(ComponentConfig):
    endpoint: str = "localhost:4317"
    max_recv_msg_size_mib: int = Field(4, gt=0)
    max_concurrent_streams: int = Field(0, ge=0)
    include_metadata: bool = False
    tls: TlsServerConfig | None = None
    auth: AuthConfig | None = None

    _check_endpoint = field_validator("endpoint")(lambda cls, v: check_endpoint(v))
    _check_tls = field_validator("tls")(lambda cls, v: check_grpc_server(v))


class HttpConfig(ComponentConfig):
    endpoint: str = "localhost:4318"
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"
    max_request_body_size: int = Field(20 * 1024 * 1024, gt=0)
    # otelcol's confighttp defaults: headers within a minute, no limit on the whole request
    read_header_timeout: Duration = Field(60.0, ge=0)
    read_timeout: Duration = Field(0.0, ge=0)
    include_metadata: bool = False
    tls: TlsServerConfig | None = None
    auth: AuthConfig | None = None

    _check_endpoint = field_validator("endpoint")(lambda cls, v: check_endpoint(v))


class ProtocolsConfig(ComponentConfig):
    grpc: GrpcConfig | None = None
    http: HttpConfig | None = None

    @field_validator("grpc", "http", mode="before")
    @classmethod
    def _empty_means_defaults(cls, value: Any) -> Any:
        return {} if value is None else value


class OtlpReceiverConfig(ComponentConfig):
    protocols: ProtocolsConfig

    def config_warnings(self) -> list[str]:
        if self.protocols.grpc is None and self.protocols.http is None:
            return ["no protocol is enabled: add protocols::grpc or protocols::http"]
        return [f"protocols::{name}::tls: {warning}" for name in ("grpc", "http")
                if (protocol := getattr(self.protocols, name)) is not None and protocol.tls is not None
                for warning in protocol.tls.config_warnings()]


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
        """Stop taking new requests; requests already inside finish their commit."""
        for server in self._servers:
            await server.stop()

    async def shutdown(self) -> None:
        await self.stop_accepting()
        self._servers = []


FACTORY = Factory("otlp", OtlpReceiverConfig, OtlpReceiver)
