"""Value types that otelcol configs use: durations ("200ms", "10s", "5m") and endpoints."""

from __future__ import annotations

import re

from edgeagent.masking import shown_url  # an endpoint in an error shows no password or token

# durations are defined in otel, which the sampler library shares; the agent's configs import them here
from otel.durations import Duration, format_duration, parse_duration

# whole numbers bounded as the Go type of the otelcol setting they stand for (a plain int is Go's int)
from otel.godecode import Int32, Uint32, Uint64

__all__ = ["Duration", "Int32", "Uint32", "Uint64", "check_endpoint", "format_duration", "host_and_port",
           "parse_duration", "split_endpoint"]


def host_and_port(endpoint: str, default_port: int) -> tuple[str, int]:
    """"host:port", "[::1]:4317" or ":4317" -> (host as written, port); ValueError for a port that is no number."""
    text = endpoint.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    try:
        return host, int(port) if port else default_port
    except ValueError as exc:
        raise ValueError(f"invalid endpoint {endpoint!r}: expected host:port") from exc


def split_endpoint(endpoint: str, default_port: int) -> tuple[str, int]:
    """`host_and_port`, where an empty host means every interface."""
    host, port = host_and_port(endpoint, default_port)
    return host or "0.0.0.0", port


def check_endpoint(endpoint: str) -> str:
    split_endpoint(endpoint, 0)
    return endpoint


def endpoint_port(endpoint: str) -> str | None:
    """The port an endpoint or URL names ("host:4317", "[::1]:4317", "http://h:4318/x"), as written; None if it
    names none."""
    text = endpoint.strip()
    if "://" in text:
        text = re.split(r"[/?#]", text.split("://", 1)[1], maxsplit=1)[0].rpartition("@")[2]
    if text.startswith("["):
        port = text.partition("]")[2].lstrip(":")
    elif text.count(":") == 1:
        port = text.partition(":")[2]
    else:
        return None
    return port or None


def port_problem(endpoint: str) -> str | None:
    """Why the port in an endpoint cannot be used, or None."""
    port = endpoint_port(endpoint)
    if port is None:
        return None
    if not port.isdigit():  # refused in a URL, as Go's url.Parse refuses it; elsewhere a unix socket's path
        return f"port {port!r} in {shown_url(endpoint)!r} is not a number; use a port from 1 to 65535" \
            if "://" in endpoint else None
    if not 1 <= int(port) <= 65535:
        return f"port {port} in {shown_url(endpoint)!r} is outside 1-65535; use a port from 1 to 65535"
    return None
