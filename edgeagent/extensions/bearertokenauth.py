"""The `bearertokenauth` extension: a static bearer token, for receivers and exporters (otelcol contrib).

Keys as otelcol 0.165's: `token`, `tokens` (several accepted at once, e.g. during a rotation; a
client sends the first), `filename` (one token per line, its first whitespace-delimited word; the
rest of the line is a comment; read again when the file changes), `scheme` (default "Bearer";
empty sends the bare token), `header` (default "Authorization"), `retry_on_failure` (`enabled`,
`max_retries` (0: no limit), `interval`) and `wait_for_token_file`. As in otelcol, `tokens` wins
over `filename`, and `filename` over `token` (a warning says so); `token` with `tokens` is an error.

Without `retry_on_failure`, a token file that cannot be read (missing or empty) does not stop
the start, as in otelcol 0.165, whose watcher then fails in the background: the extension is
marked failed, every request gets 401, a client sends the header empty, and the file is read at
the next start only. With it, the file is tried every `interval` until it can be read: in the
background (the agent starts; until then no request gets in and exports wait in their queues;
running out of `max_retries` marks the extension failed) or, with `wait_for_token_file`, before
the start goes on (running out fails it).

Server side, `authenticate(headers)` accepts a request whose header equals `<scheme> <token>`
for one of the tokens, compared in constant time. Client side, `client_headers()` gives that
header for every request. Token values are never logged nor printed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from edgeagent.auth import AuthenticatorConfig
from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration
from edgeagent.errors import RetryableError
from edgeagent.runtime.reload import Reloading

log = logging.getLogger(__name__)


class FileRetryConfig(ComponentConfig):
    enabled: bool = False
    max_retries: int = Field(0, ge=0)
    interval: Duration = 0.0

    @model_validator(mode="after")
    def _check(self) -> FileRetryConfig:
        if self.enabled and self.interval <= 0:
            raise ValueError("retry_on_failure.interval must be greater than 0 when retry_on_failure.enabled is true")
        return self


class BearerTokenAuthConfig(AuthenticatorConfig):
    scheme: str = "Bearer"
    header: str = "Authorization"
    token: str | None = Field(None, repr=False)
    tokens: list[str] = Field(default_factory=list, repr=False)
    filename: str | None = None
    retry_on_failure: FileRetryConfig = Field(default_factory=FileRetryConfig)
    wait_for_token_file: bool = False

    @model_validator(mode="after")
    def _check(self) -> BearerTokenAuthConfig:
        if not (self.token or self.tokens or self.filename):
            raise ValueError("no bearer token: set token, tokens or filename")
        if self.token and self.tokens:  # otelcol's words
            raise ValueError("either tokens or token should be provided, not both")
        if any(not token for token in self.tokens):
            raise ValueError("tokens: a token must not be empty")
        if not self.header.strip():
            raise ValueError("header must not be empty")
        if (self.retry_on_failure.enabled or self.wait_for_token_file) and not self.filename:
            raise ValueError("retry_on_failure and wait_for_token_file: requires filename to be set")
        if self.wait_for_token_file and not self.retry_on_failure.enabled:
            raise ValueError("wait_for_token_file requires retry_on_failure to be enabled")
        return self

    def config_warnings(self) -> list[str]:
        if self.filename and self.tokens:
            return ["tokens is set, so filename is ignored (as in otelcol); remove one of them"]
        if self.filename and self.token:
            return ["filename is set, so token is ignored (as in otelcol); remove it"]
        return []


class BearerTokenAuth:
    """An authenticator (see edgeagent.auth): checks incoming requests, adds the header to outgoing ones."""

    # as its gRPC credentials in otelcol: a gRPC exporter sends the token over TLS only
    requires_transport_security = True

    def __init__(self, component_id: str, config: BearerTokenAuthConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self.host = host
        self._header = config.header.lower()
        self._values: Reloading[list[bytes]] | None = None
        self._waiting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        filename = self.config.filename
        if self.config.tokens or not filename:
            values = [self._value(token) for token in self.config.tokens or [self.config.token or ""]]
            self._values = Reloading([], lambda: values)
        elif not self.config.retry_on_failure.enabled:
            self._read_or_refuse_all(filename)
        elif self.config.wait_for_token_file:
            await self._wait_for(filename)
        else:
            self._waiting = asyncio.create_task(self._wait_for(filename), name=f"extensions::{self.id}")
            self._waiting.add_done_callback(self._waited)

    async def shutdown(self) -> None:
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
        self._values = None

    def _read(self, filename: str) -> None:
        self._values = Reloading([filename], lambda: self._read_file(filename))
        log.info("bearer tokens read from a file", extra={"extension": self.id, "file": filename,
                                                        "tokens": len(self._values.value)})

    def _read_or_refuse_all(self, filename: str) -> None:
        try:
            self._read(filename)
        except (OSError, ValueError) as exc:
            self._values = Reloading([], list)  # no token: nothing gets in, the client header is empty
            self._fail(f"{filename}: {exc}", "bearer token file could not be read: every request gets 401 and "
                       "exports send the header empty until the agent starts again with the file in place "
                       "(retry_on_failure waits for it)")

    async def _wait_for(self, filename: str) -> None:
        """Try the file every retry_on_failure.interval; raise the last error once max_retries are used."""
        retry = self.config.retry_on_failure
        failed = 0
        while True:
            try:
                return self._read(filename)
            except (OSError, ValueError) as exc:
                failed += 1
                if retry.max_retries and failed > retry.max_retries:
                    raise OSError(f"{filename}: not read after {retry.max_retries} retries: {exc}") from exc
                log.warning("bearer token file not read yet; trying again", extra={
                    "extension": self.id, "file": filename, "attempt": failed, "error": str(exc),
                    "next_attempt_in_seconds": retry.interval})
            await asyncio.sleep(retry.interval)

    def _waited(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._fail(str(task.exception()), "bearer token file was never read: no request gets in and exports wait")

    def _fail(self, error: str, consequence: str) -> None:
        """As otelcol's permanent error status: logged, and health names the extension."""
        log.error(consequence, extra={"extension": self.id, "error": error})
        fail = getattr(self.host, "component_failed", None)
        if fail is not None:
            fail(f"extensions::{self.id}", error)

    def _value(self, token: str) -> bytes:
        return (f"{self.config.scheme} {token}" if self.config.scheme else token).encode()

    def _read_file(self, filename: str) -> list[bytes]:
        with open(filename, encoding="utf-8") as handle:
            tokens = [words[0] for words in map(str.split, handle) if words]  # the rest is a comment
        if not tokens:
            raise ValueError(f"{filename} holds no token")
        return [self._value(token) for token in tokens]

    def _current(self) -> list[bytes]:
        if self._values is None:
            if self._waiting is not None:
                raise RetryableError(f"extension {self.id} has not read its token file yet")
            raise RuntimeError(f"extension {self.id} is not started")
        return self._values.get()

    def authenticate(self, headers: Mapping[str, str]) -> bool:
        """True when the configured header carries `<scheme> <token>` for one of the tokens."""
        presented = next((value for name, value in headers.items() if name.lower() == self._header), None)
        if presented is None or self._values is None:
            return False
        presented_bytes = presented.encode("utf-8", "surrogateescape")
        matched = False
        for expected in self._current():  # every token is compared, so timing does not tell which matched
            matched |= hmac.compare_digest(presented_bytes, expected)
        return matched

    def client_headers(self) -> dict[str, str]:
        """The header to send with every request: the first token (empty without one, as otelcol sends it)."""
        values = self._current()
        return {self.config.header: values[0].decode() if values else ""}


FACTORY = Factory("bearertokenauth", BearerTokenAuthConfig, BearerTokenAuth)
