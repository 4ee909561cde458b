"""The `health_check` extension: `/` (otelcol), `/health`, `/health/live`, `/health/ready`.

Live means the process and its event loop run. Ready means receivers are up and the
queue is open. `/health` and `/` answer with details: queue backlog, upstream state,
memory limiter state, and failed components.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import field_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import check_endpoint, split_endpoint

log = logging.getLogger(__name__)


class HealthCheckConfig(ComponentConfig):
    endpoint: str = "localhost:13133"
    path: str = "/"

    _check_endpoint = field_validator("endpoint")(lambda cls, v: check_endpoint(v))


class HealthCheck:
    def __init__(self, component_id: str, config: HealthCheckConfig, host: Any):
        self.id = component_id
        self.config = config
        self.host = host
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.config.path, self._details)
        for path in ("/health", "/health/live", "/health/ready"):
            if path != self.config.path:
                app.router.add_get(path, {"/health": self._details, "/health/live": self._live,
                                          "/health/ready": self._ready}[path])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = split_endpoint(self.config.endpoint, 13133)
        await web.TCPSite(self._runner, host, port, reuse_address=True).start()
        log.info("health check listening", extra={"endpoint": self.config.endpoint})

    async def shutdown(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

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
