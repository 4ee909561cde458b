"""The agent's control socket: a local HTTP API on a unix socket in its state directory.

`edgeagent status` and the `edgeagent queue ...` commands use it while the agent runs, so
that changes go through the process that owns the queue (and its in-memory state).
The socket is created with mode 0600: only the agent's user may use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

SOCKET_NAME = "control.sock"


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, SOCKET_NAME)


class ControlServer:
    """Serves `handlers[name](params) -> awaitable result` as POST /<name> with a JSON body."""

    def __init__(self, path: str, handlers: Mapping[str, Callable[[dict[str, Any]], Any]]):
        self.path = path
        self.handlers = handlers
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)  # left by a process that was killed; we hold the queue lock
        old_mask = os.umask(0o177)
        try:
            await web.UnixSite(self._runner, self.path).start()
        finally:
            os.umask(old_mask)

    async def shutdown(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            if os.path.exists(self.path):
                os.unlink(self.path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        handler = self.handlers.get(request.match_info["name"])
        if handler is None:
            return web.json_response({"error": "unknown command"}, status=404)
        params = await request.json() if request.can_read_body else {}
        try:
            result = await handler(params)
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if isinstance(result, (bytes, bytearray)):
            return web.Response(body=bytes(result), content_type="application/octet-stream")
        return web.Response(text=json.dumps(result, default=str), content_type="application/json")


async def call(path: str, name: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
    """Ask the running agent; raises ConnectionError when no agent listens on `path`."""
    connector = aiohttp.UnixConnector(path=path)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.post(f"http://edgeagent/{name}", json=params or {}, allow_redirects=False) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(json.loads(body).get("error", f"control command failed ({response.status})"))
                if response.content_type == "application/json":
                    return json.loads(body)
                return body
    except (aiohttp.ClientConnectionError, FileNotFoundError) as exc:
        raise ConnectionError(str(exc)) from exc
