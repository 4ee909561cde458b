"""The `service` block: extensions, pipelines and the agent's own telemetry."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineConfig(_Strict):
    receivers: list[str] = Field(default_factory=list)
    processors: list[str] = Field(default_factory=list)
    exporters: list[str] = Field(default_factory=list)


class LogsConfig(_Strict):
    level: Literal["debug", "info", "warn", "warning", "error", "DEBUG", "INFO", "WARN", "WARNING", "ERROR"] = "info"
    encoding: Literal["console", "json", "auto"] = "auto"


class PrometheusPull(_Strict):
    host: str = "127.0.0.1"
    port: int = 8888


class PullExporter(_Strict):
    prometheus: PrometheusPull


class Pull(_Strict):
    exporter: PullExporter


class Reader(_Strict):
    pull: Pull


class MetricsConfig(_Strict):
    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    address: str | None = None
    readers: list[Reader] = Field(default_factory=list)

    def endpoint(self) -> str | None:
        """host:port to serve /metrics on, or None when telemetry metrics are off."""
        if self.level == "none":
            return None
        if self.readers:
            prom = self.readers[0].pull.exporter.prometheus
            return f"{prom.host}:{prom.port}"
        return self.address or "127.0.0.1:8888"


class TelemetryConfig(_Strict):
    logs: LogsConfig = Field(default_factory=LogsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


class ServiceConfig(_Strict):
    extensions: list[str] = Field(default_factory=list)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @field_validator("pipelines", mode="before")
    @classmethod
    def _no_null_pipelines(cls, value):
        if isinstance(value, dict):
            return {key: ({} if spec is None else spec) for key, spec in value.items()}
        return value
