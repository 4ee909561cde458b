"""Value types that otelcol configs use: durations ("200ms", "10s", "5m") and sizes."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Parse a Go-style duration ("1h30m", "200ms", "10s") into seconds.

    A bare number is taken as seconds, which is what users mean in YAML like `timeout: 30`.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: use a number with a unit such as 200ms, 10s or 5m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text in ("0", ""):
            return 0.0
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or pos == 0:
            raise ValueError(f"invalid duration {value!r}: use a number with a unit such as 200ms, 10s or 5m")
    else:
        raise ValueError(f"invalid duration {value!r}: use a number with a unit such as 200ms, 10s or 5m")
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in YAML as a Go-style duration."""


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


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


def endpoint_port(endpoint: str) -> int | None:
    """The port an endpoint or URL names ("host:4317", "[::1]:4317", "http://h:4318/x"); None if it names none."""
    text = endpoint.strip()
    if "://" in text:
        text = text.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    if text.startswith("["):
        port = text.partition("]")[2].lstrip(":")
    elif text.count(":") == 1:
        port = text.partition(":")[2]
    else:
        return None
    return int(port) if port.isdigit() else None


def port_problem(endpoint: str) -> str | None:
    """Why the port in an endpoint cannot be used, or None."""
    port = endpoint_port(endpoint)
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} in {endpoint!r} is outside 1-65535; use a port from 1 to 65535"
    return None
