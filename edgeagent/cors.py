"""CORS for the OTLP/HTTP receiver, answered as otelcol's confighttp does (it uses rs/cors).

* A preflight (OPTIONS with Access-Control-Request-Method) is answered 204 on any path and
  never reaches a handler; only an allowed origin, method (GET, POST, HEAD) and headers get
  the Access-Control-Allow-* headers, echoing what was asked, with credentials allowed.
* Any other request from an allowed origin is served as usual with Access-Control-Allow-Origin
  (the origin itself), Allow-Credentials and Expose-Headers; other origins get no CORS headers.
* An origin pattern may hold one `*` standing for any run of characters; `*` alone allows all.
"""

from __future__ import annotations

from pydantic import Field

from edgeagent.component import ComponentConfig
from edgeagent.http1.server import Handler, Middleware, Request, Response

ALLOWED_METHODS = frozenset({"GET", "POST", "HEAD"})
# always allowed (rs/cors and the CORS safelist); X-Requested-With only when none are configured
IMPLICIT_HEADERS = frozenset({"accept", "accept-language", "content-type", "content-language", "origin"})


class CorsConfig(ComponentConfig):
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_headers: list[str] = Field(default_factory=list)
    exposed_headers: list[str] = Field(default_factory=list)
    max_age: int = Field(0, ge=0)  # seconds a browser may cache a preflight answer; 0: no header

    def config_warnings(self) -> list[str]:
        if not self.allowed_origins and self.allowed_headers:
            return ["cors::allowed_headers without allowed_origins is ignored, as by otelcol; add allowed_origins"]
        return []


class Cors:
    def __init__(self, config: CorsConfig):
        self.config = config
        origins = [origin.lower() for origin in config.allowed_origins]
        self._any_origin = "*" in origins
        self._exact = frozenset(origin for origin in origins if "*" not in origin)
        self._patterns = [tuple(origin.split("*", 1)) for origin in origins if "*" in origin and origin != "*"]
        headers = {header.lower() for header in config.allowed_headers} or {"x-requested-with"}
        self._any_header = "*" in headers
        self._headers = frozenset(headers | IMPLICIT_HEADERS)

    def origin_allowed(self, origin: str) -> bool:
        origin = origin.lower()
        if self._any_origin or origin in self._exact:
            return True
        return any(len(origin) >= len(prefix) + len(suffix) and origin.startswith(prefix) and origin.endswith(suffix)
                   for prefix, suffix in self._patterns)

    def _headers_allowed(self, requested: list[str]) -> bool:
        return self._any_header or all(header in self._headers for header in requested)

    def preflight(self, request: Request) -> Response:
        response = Response(204)
        response.headers.add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        origin = request.headers.get("Origin", "")
        method = request.headers.get("Access-Control-Request-Method", "").upper()
        asked = request.headers.get("Access-Control-Request-Headers", "")
        requested = [header.strip().lower() for header in asked.split(",") if header.strip()]
        if not origin or not self.origin_allowed(origin) or method not in ALLOWED_METHODS \
                or not self._headers_allowed(requested):
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = method
        if requested:
            response.headers["Access-Control-Allow-Headers"] = ", ".join(requested)
        response.headers["Access-Control-Allow-Credentials"] = "true"
        if self.config.max_age > 0:
            response.headers["Access-Control-Max-Age"] = str(self.config.max_age)
        return response

    def decorate(self, request: Request, response: Response) -> None:
        response.headers.add("Vary", "Origin")
        origin = request.headers.get("Origin", "")
        if origin and self.origin_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            if self.config.exposed_headers:
                response.headers["Access-Control-Expose-Headers"] = ", ".join(self.config.exposed_headers)

    def middleware(self) -> Middleware:
        async def cors(request: Request, handler: Handler) -> Response:
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                return self.preflight(request)
            response = await handler(request)  # 404 and 405 too: answered with the same CORS headers
            self.decorate(request, response)
            return response

        return cors
