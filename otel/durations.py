"""Go-style durations as otelcol configs write them ("200ms", "10s", "1h30m")."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Parse a Go-style duration ("1h30m", "200ms", "10s") into seconds.

    A bare number is taken as seconds, as a model built in code gives it; in a config document
    otel.godecode has made it seconds from otelcol's nanoseconds before it gets here.
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


def go_duration(seconds: float) -> str:
    """Seconds as Go's time.Duration prints them, as otelcol's print-config does: 200ms, 1.5s,
    1m30s, 5m0s, 1h30m0s; the text reads back to the same nanoseconds."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _decimal(ns, 3) + "µs"
    if ns < 1_000_000_000:
        return _decimal(ns, 6) + "ms"
    minutes, rest = divmod(ns, 60 * 10**9)
    text = _decimal(rest, 9) + "s"
    if minutes == 0:
        return text
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{text}" if hours else f"{minutes}m{text}"


def _decimal(value: int, digits: int) -> str:
    """`value` / 10**digits with the fraction's trailing zeros left out, as Go's fmtFrac does."""
    whole, fraction = divmod(value, 10**digits)
    return f"{whole}.{fraction:0{digits}d}".rstrip("0").rstrip(".")


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(go_duration, return_type=str,
                                                                             when_used="json")]
"""Seconds, written in YAML as a Go-style duration (and so printed, by a JSON-mode dump)."""


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
