"""The `bearertokenauth` extension: a static bearer token, for receivers and exporters (otelcol contrib).

Keys as otelcol's: `token`, `tokens` (several accepted at once, e.g. during a rotation; a
client sends the first), `filename` (one token per line, read again when the file changes),
`scheme` (default "Bearer"; empty sends the bare token) and `header` (default "Authorization").
As in otelcol, `filename` wins over `tokens`, and `tokens` over `token` (a warning says so).

Server side, `authenticate(headers)` accepts a request whose header equals `<scheme> <token>`
for one of the tokens, compared in constant time. Client side, `client_headers()` gives that
header for every request. Token values are never logged nor printed.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from edgeagent.auth import AuthenticatorConfig
from edgeagent.component import Factory
from edgeagent.runtime.reload import Reloading

log = logging.getLogger(__name__)


class BearerTokenAuthConfig(AuthenticatorConfig):
    scheme: str = "Bearer"
    header: str = "Authorization"
    token: str | None = Field(None, repr=False)
    tokens: list[str] = Field(default_factory=list, repr=False)
    filename: str | None = None

    @model_validator(mode="after")
    def _check(self) -> BearerTokenAuthConfig:
        if not (self.token or self.tokens or self.filename):
            raise ValueError("no bearer token: set token, tokens or filename")
        if any(not token for token in self.tokens):
            raise ValueError("tokens: a token must not be empty")
        if not self.header.strip():
            raise ValueError("header must not be empty")
        return self

    def config_warnings(self) -> list[str]:
        if self.filename and (self.token or self.tokens):
            return ["filename is set, so token and tokens are ignored (as in otelcol); remove them"]
        if self.token and self.tokens:
            return ["tokens is set, so token is ignored (as in otelcol); remove it"]
        return []


class BearerTokenAuth:
    """An authenticator (see edgeagent.auth): checks incoming requests, adds the header to outgoing ones."""

    def __init__(self, component_id: str, config: BearerTokenAuthConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self._header = config.header.lower()
        self._values: Reloading[list[bytes]] | None = None

    async def start(self) -> None:
        filename = self.config.filename
        if filename:
            self._values = Reloading([filename], lambda: self._read_file(filename))
            log.info("bearer tokens read from a file", extra={"extension": self.id, "file": filename,
                                                            "tokens": len(self._values.value)})
        else:
            tokens = self.config.tokens or [self.config.token or ""]
            values = [self._value(token) for token in tokens]
            self._values = Reloading([], lambda: values)

    async def shutdown(self) -> None:
        self._values = None

    def _value(self, token: str) -> bytes:
        return (f"{self.config.scheme} {token}" if self.config.scheme else token).encode()

    def _read_file(self, filename: str) -> list[bytes]:
        with open(filename, encoding="utf-8") as handle:
            tokens = [line.strip() for line in handle if line.strip()]
        if not tokens:
            raise ValueError(f"{self.config.filename} holds no token")
        return [self._value(token) for token in tokens]

    def _current(self) -> list[bytes]:
        if self._values is None:
            raise RuntimeError(f"extension {self.id} is not started")
        return self._values.get()

    def authenticate(self, headers: Mapping[str, str]) -> bool:
        """True when the configured header carries `<scheme> <token>` for one of the tokens."""
        presented = next((value for name, value in headers.items() if name.lower() == self._header), None)
        if presented is None:
            return False
        presented_bytes = presented.encode("utf-8", "surrogateescape")
        matched = False
        for expected in self._current():  # every token is compared, so timing does not tell which matched
            matched |= hmac.compare_digest(presented_bytes, expected)
        return matched

    def client_headers(self) -> dict[str, str]:
        """The header to send with every request: the first token."""
        return {self.config.header: self._current()[0].decode()}


FACTORY = Factory("bearertokenauth", BearerTokenAuthConfig, BearerTokenAuth)
