"""`middlewares` (otelcol's configmiddleware): a server's or a client's list of middleware
extensions by id.

otelcol wraps a server's handler (a client's transport) with every extension the list names, and
refuses to start the component when one is missing ("failed to resolve middleware") or is no
middleware of that kind ("requested extension is not an HTTP server middleware"). edgeagent
implements no middleware extension, so only the empty list can start; validation says so rather
than the start.
"""

from __future__ import annotations

from edgeagent.component import ComponentConfig


class MiddlewareConfig(ComponentConfig):
    id: str


def check_server_middlewares(middlewares: list[MiddlewareConfig], kind: str) -> list[MiddlewareConfig]:
    """Validation of a server's `middlewares` (a field validator): only the empty list.
    `kind` is "a gRPC" or "an HTTP"."""
    return _none(middlewares, f"{kind} server")


def check_client_middlewares(middlewares: list[MiddlewareConfig], kind: str) -> list[MiddlewareConfig]:
    """Validation of a client's `middlewares` (a field validator): only the empty list."""
    return _none(middlewares, f"{kind} client")


def _none(middlewares: list[MiddlewareConfig], role: str) -> list[MiddlewareConfig]:
    if middlewares:
        names = ", ".join(repr(middleware.id) for middleware in middlewares)
        raise ValueError(f"{names}: edgeagent implements no middleware extensions, so no extension can be "
                         f"{role} middleware (otelcol refuses to start such a component: failed to "
                         f"resolve middleware); remove the entries or leave the list empty")
    return middlewares
