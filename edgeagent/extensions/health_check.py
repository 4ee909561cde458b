"""The `health_check` extension: `/` (otelcol), `/health`, `/health/live`, `/health/ready`.

Live means the process and its event loop run. Ready means receivers are up and the
queue is open. `/health` and `/` answer with details: queue backlog, upstream state,
memory limiter state, and failed components; with `response_body`, `path` answers with its
`healthy` or `unhealthy` text instead, as otelcol's does. As there, `path` answers any method,
a `path` ending in `/` every path below it too (Go's ServeMux), and the answer is 503 until the
agent has started and again from the start of its stop.

The keys are otelcol 0.165's. Its health check is a confighttp server: the listener's keys
(`transport`, `endpoint`, `tls`) and the server's timeouts (`read_header_timeout`,
`read_timeout`, `write_timeout`, `keepalive`) apply as on the OTLP/HTTP receiver. The keys that
wrap the server's handler (`cors`, `auth`, `response_headers`, `compression_algorithms`,
`max_request_body_size`, `include_metadata`) have no effect, in otelcol as here: its health
check answers with a handler of its own in their place (a warning says so; an authenticator
`auth` names must still exist, and `middlewares` must be empty, as otelcol resolves both at
start). `path`, `response_body`; `check_collector_pipeline` (kept for old configs, ignored
since it never worked) and `component_health` (read only by the v2 health check) are accepted
and do nothing, as in otelcol, with a warning when they ask for something. The v2 settings
(`use_v2: true`, `http`, `grpc`) are refused, as otelcol 0.165 refuses them unless its alpha
feature gate `extension.healthcheck.useComponentStatus` is on; edgeagent has no such gate.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import field_validator

from edgeagent import auth, confighttp, netaddr
from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration
from edgeagent.confighttp import HttpServerConfig
from edgeagent.http1.server import Handler, Request, Response, Server

log = logging.getLogger(__name__)
_V2 = ("the v2 health check needs otelcol's alpha feature gate extension.healthcheck.useComponentStatus, "
       "without which otelcol 0.165 refuses it too; edgeagent has no such gate: use endpoint, path and "
       "response_body")


_ABSENT = object()
# confighttp keys that act on the server's handler: otelcol's health check builds the server with them,
# then answers with a handler of its own, so none of them has an effect there (an authenticator named
# in `auth` must still exist, or the start fails)
_HANDLER_SETTINGS = ("cors", "auth", "response_headers", "compression_algorithms", "max_request_body_size",
                     "include_metadata")


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


class HealthCheckConfig(HttpServerConfig):
    endpoint: str = "localhost:13133"
    path: str = "/"
    response_body: ResponseBodyConfig | None = None
    check_collector_pipeline: CheckCollectorPipelineConfig | None = None
    component_health: ComponentHealthConfig | None = None
    use_v2: bool = False
    UNSET_STAYS_UNSET = frozenset(_HANDLER_SETTINGS)  # each one written is warned of
    http: Any = _ABSENT  # the v2 settings: refused whatever they hold, even nothing (`http:`)
    grpc: Any = _ABSENT

    @field_validator("endpoint")
    @classmethod
    def _endpoint_required(cls, endpoint: str) -> str:
        if not endpoint:  # otelcol: "http endpoint required"
            raise ValueError("endpoint is required (host:port, or a socket path with transport: unix)")
        return endpoint

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
        warnings = super().config_warnings()
        unused = [name for name in _HANDLER_SETTINGS if name in self.model_fields_set]
        warnings += [f"{name} has no effect on the health check, as in otelcol 0.165: its health check answers "
                     f"with a handler of its own, not the one {name} applies to" for name in unused]
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
        self._server: Server | None = None
        self._address: netaddr.Address | None = None

    async def start(self) -> None:
        auth.resolve(self.host, self.config.auth)  # as otelcol: an authenticator that is not there stops the start
        server = Server(wait_for_request=confighttp.wait_for_request(self.config),
                        write_timeout=self.config.write_timeout)
        answer = self._details if self.config.response_body is None else self._body
        server.any(self.config.path, answer)  # otelcol's handler takes every method (HAProxy checks with OPTIONS)
        if self.config.path.endswith("/"):  # otelcol's Go ServeMux: such a pattern matches every path below it
            server.otherwise(lambda request: _below(request, self.config.path, answer))
        for path in ("/health", "/health/live", "/health/ready"):
            if path != self.config.path:
                server.get(path, {"/health": self._details, "/health/live": self._live,
                                  "/health/ready": self._ready}[path])
        address = await netaddr.listen(self.config.transport, self.config.endpoint, 13133)
        try:
            await confighttp.listen(server, address, self.config)
        except BaseException:
            netaddr.close(address)
            raise
        self._server, self._address = server, address
        log.info("health check listening", extra={"endpoint": self.config.endpoint, "transport": address.transport,
                                                  "tls": self.config.tls is not None})

    async def shutdown(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace=1.0)
        if self._address is not None:
            address, self._address = self._address, None
            netaddr.close(address)

    async def _body(self, request: Request) -> Response:
        """otelcol's response_body: the configured text, 200 when healthy, 503 when not."""
        body = self.config.response_body
        assert body is not None
        if self.host.health()["healthy"]:
            return Response(200, text=body.healthy)
        return Response(503, text=body.unhealthy)

    async def _live(self, request: Request) -> Response:
        return _json(200, {"status": "alive"})

    async def _ready(self, request: Request) -> Response:
        ready = self.host.ready()
        return _json(200 if ready else 503, {"status": "ready" if ready else "not ready"})

    async def _details(self, request: Request) -> Response:
        details = self.host.health()
        healthy = details["healthy"]
        details["status"] = "Server available" if healthy else "Server not available"
        return _json(200 if healthy else 503, details)


async def _below(request: Request, path: str, answer: Handler) -> Response:
    if request.path.startswith(path):
        return await answer(request)
    return Response(404, text="404 page not found\n")


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, text=json.dumps(body, default=str), content_type="application/json")


FACTORY = Factory("health_check", HealthCheckConfig, HealthCheck)
