"""Settings every exporter shares: otelcol's exporterhelper keys plus edgeagent's bandwidth cap."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from edgeagent.component import ComponentConfig
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

    @field_validator("headers", mode="before")
    @classmethod
    def _header_values_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): ("" if v is None else str(v)) for k, v in value.items()}
        return value

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("timeout must be greater than zero")
        return value
