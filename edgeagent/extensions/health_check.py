"""The `health_check` extension: `/` (otelcol), `/health`, `/health/live`, `/health/ready`.

Live means the process and its event loop run. Ready means receivers are up and the
queue is open. `/health` and `/` answer with details: queue backlog, upstream state,
memory limiter state, and failed components; with `response_body`, `path` answers with its
`healthy` or `unhealthy` text instead, as otelcol's does.

The keys are otelcol 0.165's: `transport`, `endpoint`, `path`, `tls` (HTTPS, as the receivers'),
`middlewares` (empty only: edgeagent has no middleware extension), `response_body`, and two
that otelcol accepts and ignores, so they do nothing here either and say so in a warning when
they ask for something: `check_collector_pipeline` (ignored since it never worked) and
`component_health` (read only by the v2 server). The v2 settings (`use_v2: true`, `http`,
`grpc`) are refused, as otelcol 0.165 refuses them unless its alpha feature gate
`extension.healthcheck.useComponentStatus` is on; edgeagent has no such gate.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import Field, ValidationInfo, field_validator

from edgeagent import netaddr, tls
from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration
from edgeagent.middleware import MiddlewareConfig, check_server_middlewares
from edgeagent.tls import TlsServerConfig

log = logging.getLogger(__name__)
_V2 = ("the v2 health check needs otelcol's alpha feature gate extension.healthcheck.useComponentStatus, "
       "without which otelcol 0.165 refuses it too; edgeagent has no feature gates: use endpoint, path and "
       "response_body")


_ABSENT = object()


class ResponseBodyConfig(ComponentConfig):
    healthy: str = ""
    unhealthy: str = ""


class CheckCollectorPipelineConfig(ComponentConfig):
    enabled: bool = False
    interval: str = "5m"  # a string in otelcol, never parsed
    exporter_failure_threshold: int = 5


class ComponentHealthConfig(ComponentConfig):
    include_permanent_errors: bool = False
    include_recoverable_errors: bool = False
    recovery_duration: Duration = 0.0


class HealthCheckConfig(ComponentConfig):
    transport: str = "tcp"  # before endpoint, whose validation depends on it
    endpoint: str = "localhost:13133"
    dialer: netaddr.DialerConfig | None = None
    path: str = "/"
    tls: TlsServerConfig | None = None
    middlewares: list[MiddlewareConfig] = Field(default_factory=list)
    response_body: ResponseBodyConfig | None = None
    check_collector_pipeline: CheckCollectorPipelineConfig | None = None
    component_health: ComponentHealthConfig | None = None
    use_v2: bool = False
    http: Any = _ABSENT  # the v2 settings: refused whatever they hold, even nothing (`http:`)
    grpc: Any = _ABSENT

    _check_transport = field_validator("transport")(lambda cls, v: netaddr.check_transport(v))
    _check_middlewares = field_validator("middlewares")(lambda cls, v: check_server_middlewares(v, "an HTTP"))

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, endpoint: str, info: ValidationInfo) -> str:
        if not endpoint:  # otelcol: "http endpoint required"
            raise ValueError("endpoint is required (host:port, or a socket path with transport: unix)")
        transport = info.data.get("transport")
        return endpoint if transport is None else netaddr.check_address(transport, endpoint)

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str) -> str:
        if not path.startswith("/"):  # otelcol: "path must start with /"
            raise ValueError(f"path {path!r} must start with /")
        return path

    @field_validator("use_v2")
    @classmethod
    def _no_v2(cls, use_v2: bool) -> bool:
        if use_v2:
            raise ValueError(_V2)
        return use_v2

    @field_validator("http", "grpc")
    @classmethod
    def _no_v2_protocols(cls, value: Any) -> Any:
        if value is _ABSENT:
            return None
        raise ValueError(_V2)

    def config_warnings(self) -> list[str]:
        warnings = [f"tls::{warning}" for warning in self.tls.config_warnings()] if self.tls is not None else []
        if self.dialer is not None:
            warnings.append(netaddr.DIALER_WARNING)
        if self.check_collector_pipeline is not None and self.check_collector_pipeline.enabled:
            warnings.append("check_collector_pipeline has no effect: otelcol 0.165 keeps the key for old configs and "
                            "ignores it (it never worked); the health answer reflects failed components already")
        if self.component_health is not None:
            warnings.append("component_health has no effect: otelcol 0.165 reads it only in the v2 health check, "
                            "which needs a feature gate edgeagent does not have")
        return warnings


class HealthCheck:
    def __init__(self, component_id: str, config: HealthCheckConfig, host: Any):
        self.id = component_id
        self.config = config
        self.host = host
        self._runner: web.AppRunner | None = None
        self._address: netaddr.Address | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.config.path, self._details if self.config.response_body is None else self._body)
        for path in ("/health", "/health/live", "/health/ready"):
            if path != self.config.path:
                app.router.add_get(path, {"/health": self._details, "/health/live": self._live,
                                          "/health/ready": self._ready}[path])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        ssl_context = tls.server_ssl_context(self.config.tls) if self.config.tls is not None else None
        self._address = address = await netaddr.listen(self.config.transport, self.config.endpoint, 13133)
        site: web.BaseSite
        if address.sock is not None:
            site = web.SockSite(self._runner, address.sock, ssl_context=ssl_context)
        else:
            site = web.TCPSite(self._runner, address.host, address.port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        log.info("health check listening", extra={"endpoint": self.config.endpoint, "transport": address.transport,
                                                  "tls": ssl_context is not None})

    async def shutdown(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._address is not None:
            address, self._address = self._address, None
            netaddr.close(address)

    async def _body(self, request: web.Request) -> web.Response:
        """otelcol's response_body: the configured text, 200 when healthy, 503 when not."""
        body = self.config.response_body
        assert body is not None
        if self.host.health()["healthy"]:
            return web.Response(status=200, text=body.healthy)
        return web.Response(status=503, text=body.unhealthy)

    async def _live(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "alive"})

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self.host.ready()
        return _json(200 if ready else 503, {"status": "ready" if ready else "not ready"})

    async def _details(self, request: web.Request) -> web.Response:
        details = self.host.health()
        healthy = details["healthy"]
        details["status"] = "Server available" if healthy else "Server not available"
        return _json(200 if healthy else 503, details)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, default=str), content_type="application/json")


FACTORY = Factory("health_check", HealthCheckConfig, HealthCheck)
