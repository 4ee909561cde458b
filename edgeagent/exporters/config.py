"""Settings every exporter shares: otelcol's exporterhelper keys plus edgeagent's bandwidth cap."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from edgeagent.component import ComponentConfig, null_keeps_defaults
from edgeagent.config.types import Duration
from edgeagent.configretry import RetryConfig
from edgeagent.exporters.bandwidth import RateLimitConfig
from edgeagent.exporters.sender import QueueConfig


class ExporterConfig(ComponentConfig):
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 30.0
    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)
    sending_queue: QueueConfig = Field(default_factory=QueueConfig)
    rate_limit: RateLimitConfig | None = None

    _null_keeps_defaults = null_keeps_defaults("retry_on_failure", "sending_queue")  # sending_queue stays on

    @field_validator("headers", mode="before")
    @classmethod
    def _header_values_as_text(cls, value: Any) -> Any:
        """A map, or otelcol's list of {name, value} pairs (configopaque.MapList); values as text;
        `headers:` alone is none."""
        if value is None:
            return {}
        if isinstance(value, list):
            if not all(isinstance(item, dict) and set(item) <= {"name", "value"} and isinstance(item.get("name"), str)
                       for item in value):
                raise ValueError("headers: give a map of header: value, or a list of {name, value}")
            names = [item["name"] for item in value]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"headers: duplicate keys in map-style list: {duplicates}")
            value = {item["name"]: item.get("value") for item in value}
        if isinstance(value, dict):
            return {str(k): ("" if v is None else str(v)) for k, v in value.items()}
        return value

    @field_validator("headers")
    @classmethod
    def _headers_sendable(cls, value: dict[str, str]) -> dict[str, str]:
        """Values hold no control character but tabs: no request can carry others (a CR or LF would
        add a header). Named, never shown: a value may be a secret. Names are not checked here:
        otelcol's own example config has one no request can carry, and its validate accepts it."""
        for name, text in value.items():
            if any(c < " " and c != "\t" or c == "\x7f" for c in text):
                raise ValueError(f"the value of {name!r} holds a control character such as a newline "
                                 f"(a token file read with ${{file:...}} keeps its last newline: write it with "
                                 f"printf %s, not echo)")
        return value

    def config_warnings(self) -> list[str]:
        if self.sending_queue.enabled or not self.written_unlike_default("retry_on_failure") \
                or not self.retry_on_failure.enabled:
            return []
        return ["retry_on_failure has no effect with sending_queue::enabled: false: edgeagent makes one attempt "
                "and answers the client with a retryable error when it fails (otelcol retries while the client "
                "waits); enable the queue to have failures retried here"]

    @field_validator("timeout")
    @classmethod
    def _timeout_not_negative(cls, value: float) -> float:
        """0 is otelcol's "no timeout": an attempt ends with the upstream's answer, a failed
        connection, or shutdown (exporterhelper's TimeoutConfig)."""
        if value < 0:
            raise ValueError("timeout must not be negative (0: no timeout)")
        return value
