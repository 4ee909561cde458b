"""The `service` block: extensions, pipelines and the agent's own telemetry."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from edgeagent.config.periodic import Periodic
from edgeagent.config.types import Duration
from edgeagent.configdecode import split_comma_lists


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _split_comma_lists(cls, data: Any, info: ValidationInfo) -> Any:
        return split_comma_lists(cls, data, info)


class PipelineConfig(_Strict):
    receivers: list[str] = Field(default_factory=list)
    processors: list[str] = Field(default_factory=list)
    exporters: list[str] = Field(default_factory=list)


class LogsSampling(_Strict):
    """otelcol's log sampling; edgeagent logs once per episode, never per item, so it samples nothing."""
    enabled: bool = True
    tick: Duration = 10.0
    initial: int = 10
    thereafter: int = 100


class LogsConfig(_Strict):
    """otelcol 0.165's `service::telemetry::logs`. `output_paths` are `stdout`, `stderr` or files
    (appended to); `initial_fields` go on every line. `development`, `disable_caller`,
    `disable_stacktrace`, `sampling` and `error_output_paths` (where zap reports its own
    failures) shape zap's output and have nothing to act on here."""
    level: Literal["debug", "info", "warn", "warning", "error", "DEBUG", "INFO", "WARN", "WARNING", "ERROR"] = "info"
    encoding: Literal["console", "json", "auto"] = "auto"
    development: bool = False
    disable_caller: bool = False
    disable_stacktrace: bool = False
    sampling: LogsSampling | None = None
    output_paths: list[str] = Field(default_factory=lambda: ["stderr"])
    error_output_paths: list[str] = Field(default_factory=lambda: ["stderr"])
    initial_fields: dict[str, Any] = Field(default_factory=dict)


class ResourceAttribute(_Strict):
    name: str
    value: Any = None


class TracesConfig(_Strict):
    """otelcol's `service::telemetry::traces`: without processors it exports nothing, as here."""
    level: Literal["none", "basic", "normal", "detailed"] = "basic"
    propagators: list[str] = Field(default_factory=list)
    processors: list[Any] = Field(default_factory=list)

    @field_validator("processors")
    @classmethod
    def _no_processors(cls, value: list[Any]) -> list[Any]:
        if value:
            raise ValueError("edgeagent does not trace itself, so it has no spans to export; remove processors")
        return value


class IncludeExclude(_Strict):
    """Resource attributes by name: those `included` (all when empty) that are not `excluded`."""
    included: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> IncludeExclude:
        both = sorted(set(self.included) & set(self.excluded))
        if both:  # otelcol's words
            raise ValueError(f"attribute cannot be in both include and exclude list: {both[0]}")
        return self

    def admits(self, label: str) -> bool:
        """Whether the attribute served as `label` (its name with dots as underscores) is admitted."""
        included, excluded = ({as_label(name) for name in names} for names in (self.included, self.excluded))
        return (not included or label in included) and label not in excluded


class PrometheusPull(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8888, ge=1, le=65535)
    # the resource attributes put on every series as labels (otelcol's key); None: none
    with_resource_constant_labels: IncludeExclude | None = None
    # otelcol's defaults, which are how the metrics are named here; false is refused, not ignored
    without_scope_info: bool = True
    without_units: bool = True
    without_type_suffix: bool = True

    @field_validator("without_scope_info", "without_units", "without_type_suffix")
    @classmethod
    def _only_otelcol_names(cls, value: bool) -> bool:
        if not value:
            raise ValueError("only true is supported: the metrics keep otelcol's names (no unit or type suffix, "
                             "no scope labels) so dashboards and alert rules match; remove the key")
        return value


class PullExporter(_Strict):
    prometheus: PrometheusPull


class Pull(_Strict):
    exporter: PullExporter


class Reader(_Strict):
    """otelcol's `readers` entry: a pull reader (a prometheus server) or a periodic one (a push)."""
    pull: Pull | None = None
    periodic: Periodic | None = None
    producers: list[Any] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one(self) -> Reader:
        if (self.pull is None) == (self.periodic is None):
            raise ValueError("give exactly one of pull (a prometheus server) or periodic (a push every interval)")
        return self

    def config_warnings(self) -> list[str]:
        warnings = [f"periodic::exporter::{warning}" for warning in self.periodic.exporter.config_warnings()
                    ] if self.periodic is not None else []
        if self.producers:
            warnings.append("producers: has no effect (no bridge adds metrics to the agent's own, and otelcol "
                            "0.165 ignores them too); remove producers")
        return warnings


class MetricsConfig(_Strict):
    """otelcol 0.165's `service::telemetry::metrics`: `level` and `readers`.

    `address` is what otelcol accepted before readers; it refuses it now. It is still read here
    (with a warning) so an older edgeagent config keeps working, but never with `readers`."""

    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    address: str | None = None
    readers: list[Reader] | None = None

    @model_validator(mode="after")
    def _check(self) -> MetricsConfig:
        if self.address is not None and self.readers is not None:
            raise ValueError("address and readers are both set; remove address (otelcol 0.165 refuses it) and "
                             "keep readers")
        if self.level != "none" and self.readers == []:
            raise ValueError("readers is empty while level is not none: add a pull or periodic reader, or set "
                             "level: none to turn the agent's metrics off")
        return self

    def config_warnings(self) -> list[str]:
        if self.address is None:
            return [f"readers::{at}::{warning}" for at, reader in enumerate(self.readers or [])
                    for warning in reader.config_warnings()]
        host, _, port = self.address.rpartition(":")
        return [f"address is deprecated and otelcol 0.165 refuses it; write readers: [{{pull: {{exporter: "
                f"{{prometheus: {{host: '{host or '0.0.0.0'}', port: {port or 8888}}}}}}}}}]"]

    def pushes(self) -> list[tuple[int, Periodic]]:
        """(its index in readers, the reader) of every periodic reader; none when telemetry metrics are off."""
        if self.level == "none" or self.readers is None:
            return []
        return [(at, reader.periodic) for at, reader in enumerate(self.readers) if reader.periodic is not None]

    def endpoints(self) -> list[str]:
        """host:port of every /metrics server, none when telemetry metrics are off."""
        return [endpoint for endpoint, _ in self.servers()]

    def servers(self) -> list[tuple[str, IncludeExclude | None]]:
        """(host:port, the resource attributes its series carry) of every /metrics server."""
        if self.level == "none":
            return []
        if self.address is not None:
            return [(self.address, None)]
        if self.readers is None:
            return [("127.0.0.1:8888", None)]
        pulls = [reader.pull.exporter.prometheus for reader in self.readers if reader.pull is not None]
        return [(_host_port(pull.host, pull.port), pull.with_resource_constant_labels) for pull in pulls]


def as_label(name: str) -> str:
    """A resource attribute's name as a Prometheus label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class TelemetryConfig(_Strict):
    logs: LogsConfig = Field(default_factory=LogsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    # otelcol's two forms: {attributes: [{name, value}]}, or the older map of name: value (null removes one)
    resource: dict[str, Any] = Field(default_factory=dict)

    @field_validator("resource")
    @classmethod
    def _resource(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "attributes" in value:
            if len(value) > 1 or not isinstance(value["attributes"], list):
                raise ValueError("resource: either an attributes list of {name, value} or a map of name: value")
            for item in value["attributes"]:
                ResourceAttribute.model_validate(item)
        return value

    def resource_attributes(self) -> dict[str, str | None]:
        """The resource's attributes by name; None: remove the agent's own value."""
        if "attributes" in self.resource:
            items = [ResourceAttribute.model_validate(item) for item in self.resource["attributes"]]
            return {item.name: _text(item.value) for item in items}
        return {name: _text(value) for name, value in self.resource.items()}


def _text(value: Any) -> str | None:
    return None if value is None else str(value).lower() if isinstance(value, bool) else str(value)


class ServiceConfig(_Strict):
    extensions: list[str] = Field(default_factory=list)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    def config_warnings(self) -> list[str]:
        return [f"service::telemetry::metrics::{w}" for w in self.telemetry.metrics.config_warnings()]

    @field_validator("pipelines", mode="before")
    @classmethod
    def _no_null_pipelines(cls, value):
        if isinstance(value, dict):
            return {key: ({} if spec is None else spec) for key, spec in value.items()}
        return value
