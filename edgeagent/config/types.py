"""Value types that otelcol configs use: durations ("200ms", "10s", "5m") and endpoints."""

from __future__ import annotations

# durations are defined in otel, which the sampler library shares; the agent's configs import them here
from otel.durations import Duration, format_duration, parse_duration

__all__ = ["Duration", "check_endpoint", "format_duration", "parse_duration", "split_endpoint"]


def split_endpoint(endpoint: str, default_port: int) -> tuple[str, int]:
    """"host:port", "[::1]:4317" or ":4317" -> (host, port); an empty host means every interface."""
    text = endpoint.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if host in ("", "0.0.0.0"):
        host = "0.0.0.0"
    try:
        return host, int(port) if port else default_port
    except ValueError as exc:
        raise ValueError(f"invalid endpoint {endpoint!r}: expected host:port") from exc


def check_endpoint(endpoint: str) -> str:
    split_endpoint(endpoint, 0)
    return endpoint
