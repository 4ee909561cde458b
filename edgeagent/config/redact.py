"""Secrets masked in a raw config document, as otelcol's `configopaque` fields print: `[REDACTED]`.

Masked: every value of `headers` and `response_headers` (of a map, or of a list of {name, value}
pairs), a periodic metric reader's `headers_list`, TLS `ca_pem`/`cert_pem`/`key_pem`,
tokens (`token`, `tokens`, bearertokenauth's too) and passwords (basic auth, Kafka SASL and
plain text), and a password written into a URL (`user:password@host`).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"
_SECRET_KEYS = frozenset({"ca_pem", "cert_pem", "key_pem", "token", "tokens", "password", "client_secret",
                          "api_key", "secret", "headers_list"})
_SECRET_MAPS = frozenset({"headers", "response_headers"})
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@")


def redact(node: Any, key: str = "") -> Any:
    """A copy of `node` with every secret value replaced by [REDACTED]."""
    if isinstance(node, dict):
        if key in _SECRET_MAPS and set(node) <= {"name", "value"} and "name" in node:  # one {name, value} pair
            return {**node, "value": REDACTED} if node.get("value") not in (None, "") else node
        if key in _SECRET_MAPS:
            return {name: REDACTED if value not in (None, "") else value for name, value in node.items()}
        return {name: redact(value, str(name)) for name, value in node.items()}
    if key in _SECRET_KEYS and node not in (None, ""):
        return [REDACTED for _ in node] if isinstance(node, list) else REDACTED
    if isinstance(node, list):
        return [redact(item, key) for item in node]
    if isinstance(node, str):
        return _URL_PASSWORD.sub(r"\1:" + REDACTED + "@", node)
    return node
