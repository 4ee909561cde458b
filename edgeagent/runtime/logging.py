"""Logging: JSON lines when stdout is not a terminal (systemd, containers), readable text otherwise.

Log lines are sentences; structured fields go in `extra={...}` and appear as JSON keys.
Lines are written by a thread of their own (logwriter.py): an output that takes no more (a full
pipe whose reader stalled or left, a full disk) never holds the event loop.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from edgeagent.runtime import logwriter

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD and not key.startswith("_")}


class JsonFormatter(logging.Formatter):
    def __init__(self, initial_fields: Mapping[str, Any] | None = None):
        super().__init__()
        self.initial_fields = dict(initial_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.initial_fields,
            **_fields(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, initial_fields: Mapping[str, Any] | None = None):
        super().__init__()
        self.initial_fields = dict(initial_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{key}={value}" for key, value in {**self.initial_fields, **_fields(record)}.items())
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "info", encoding: str = "auto", output_paths: Sequence[str] = ("stderr",),
              initial_fields: Mapping[str, Any] | None = None) -> None:
    """Log lines at `level` and above to every output path (stdout, stderr, or a file appended to)."""
    use_json = encoding == "json" or (encoding == "auto" and not sys.stdout.isatty())
    formatter = JsonFormatter(initial_fields) if use_json else TextFormatter(initial_fields)
    handlers: list[logging.Handler] = []
    for path in output_paths:
        handler = logwriter.Handler.for_path(path)
        handler.setFormatter(formatter)
        handlers.append(handler)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel({"warn": "WARNING"}.get(level.lower(), level.upper()))
    logging.getLogger("asyncio").setLevel(logging.WARNING)
