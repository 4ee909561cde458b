"""Request durations of the OTLP servers and clients, as otelcol's HTTP and gRPC instrumentation
serves them: `http_server_request_duration`, `rpc_server_call_duration`,
`http_client_request_duration` and `rpc_client_call_duration`, in seconds, with the semantic-convention
labels and bucket boundaries otelcol 0.165 uses. Label values otelcol leaves out (no error) are served empty,
which Prometheus treats as absent. Without the agent's metrics (a component tested alone) the
durations are measured and not served.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import SplitResult

from edgeagent.extensions.metrics import Histogram, Metrics
from edgeagent.http1.server import Handler, Middleware, Request, Response

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_SERVER_LABELS = ("http_request_method", "http_response_status_code", "http_route", "network_protocol_name",
                  "network_protocol_version", "server_address", "server_port", "url_scheme")
# the methods semantic conventions name; any other token a client sends is served as _OTHER, as otelhttp
# does, so a client cannot add series (and memory) one made-up method at a time
_KNOWN_METHODS = frozenset(("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"))
_CLIENT_LABELS = ("http_request_method", "http_response_status_code", "error_type", "network_protocol_name",
                  "network_protocol_version", "server_address", "server_port", "url_scheme")


def _histogram(metrics: Metrics | None, name: str, documentation: str, labels: tuple[str, ...]) -> Histogram:
    if metrics is None:
        return Histogram(name, documentation, labels, SECONDS_BUCKETS)
    return metrics.histogram(name, documentation, labels, SECONDS_BUCKETS)


def http_server_timer(metrics: Metrics | None, address: str, port: int, scheme: str) -> Middleware:
    """A server middleware that times every request of a receiver listening on address:port."""
    histogram = _histogram(metrics, "http_server_request_duration", "Duration of HTTP server requests (seconds).",
                           _SERVER_LABELS)
    port_text = str(port)

    async def timed(request: Request, handler: Handler) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            version = f"{request.version[0]}.{request.version[1]}"
            method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
            histogram.observe(time.perf_counter() - started, method, str(status), request.route, "http",
                              version, address, port_text, scheme)

    return timed


def rpc_server_observer(metrics: Metrics | None, method: str) -> Callable[[float, str], None]:
    """`observe(seconds, status_name)` for calls of the gRPC method `service/Method`."""
    histogram = _histogram(metrics, "rpc_server_call_duration", "Measures the duration of inbound RPC (seconds).",
                           ("rpc_method", "rpc_response_status_code", "rpc_system_name"))
    return lambda seconds, status: histogram.observe(seconds, method, status, "grpc")


def http_client_timer(metrics: Metrics | None) -> Callable[[str, SplitResult, float, int, str], None]:
    """The observer an exporter's HTTP client calls once per request (edgeagent.http1.client):
    method, URL, seconds, status (0 when the request failed) and the failure's type name."""
    histogram = _histogram(metrics, "http_client_request_duration", "Duration of HTTP client requests (seconds).",
                           _CLIENT_LABELS)

    def observe(method: str, url: SplitResult, seconds: float, status: int, error: str) -> None:
        scheme = url.scheme.lower()
        port = url.port or (443 if scheme == "https" else 80)
        histogram.observe(seconds, method, str(status) if status else "", error, "http", "1.1", url.hostname or "",
                          str(port), scheme)

    return observe


def rpc_client_observer(metrics: Metrics | None, address: str, port: str) -> Callable[[float, str, str], None]:
    """`observe(seconds, method, status_name)` for unary calls a gRPC exporter makes to address:port."""
    histogram = _histogram(metrics, "rpc_client_call_duration", "Measures the duration of outbound RPC (seconds).",
                           ("rpc_method", "rpc_response_status_code", "rpc_system_name", "server_address",
                            "server_port"))
    return lambda seconds, method, status: histogram.observe(seconds, method, status, "grpc", address, port)
