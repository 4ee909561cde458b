"""What every component shares: its id, its config model and the factory that builds it.

A component is built from its validated config by its factory and then runs with
`async start(host)` / `async shutdown()`; shutdown is idempotent and safe without start.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from edgeagent.configdecode import split_comma_lists

KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")


class ComponentConfig(BaseModel):
    """Base for component configs: unknown keys are errors, as in otelcol."""

    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)
    # settings whose being written matters (a warning, a conflict): print-config prints them only when written
    UNSET_STAYS_UNSET: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _split_comma_lists(cls, data: Any, info: ValidationInfo) -> Any:
        return split_comma_lists(cls, data, info)

    def config_warnings(self) -> list[str]:
        """Things the user should know about a config that is still accepted."""
        return []

    def written_unlike_default(self, name: str) -> bool:
        """`name` is written in the config with a value other than its default (print-config's
        output writes every default: such a key written back is not warned of)."""
        if name not in self.model_fields_set:
            return False
        default = type(self).model_fields[name].get_default(call_default_factory=True, validated_data={})
        return bool(getattr(self, name) != default)

    def warnings_for(self, signal: str) -> list[tuple[str, str]]:
        """(key, why) for each key this config takes that has no effect in a pipeline of `signal`;
        said once for all the pipelines of that signal the component serves."""
        return []

    def unfit_for(self, signal: str) -> tuple[str, str] | None:
        """(key, why) when this config cannot serve a pipeline of `signal` (traces, metrics or
        logs), as otelcol finds when it builds the pipeline; None when it can."""
        return None


def null_keeps_defaults(*fields: str) -> Callable[[Any, Any], Any]:
    """A `mode="before"` validator for blocks that are always on: `key:` alone (null) keeps the
    block's defaults, as in otelcol, rather than failing as a None."""
    return field_validator(*fields, mode="before")(lambda cls, value: {} if value is None else value)


def optional_block(value: Any, on_by_default: bool = True) -> Any:
    """otelcol's configoptional, for a `mode="before"` validator: `key:` alone (null) keeps the
    block's defaults, on if it is on by default (configoptional's Some and Default) and off (None)
    if not (its None); `enabled: false` turns the block off (None)."""
    if value is None:
        return {} if on_by_default else None
    if isinstance(value, dict) and "enabled" in value:
        value = dict(value)
        if not value.pop("enabled"):
            return None
    return value


class ConnectorConfig(ComponentConfig):
    """Base for connector configs: a connector names the pipelines it sends to."""

    def routes(self) -> list[tuple[str, str]]:
        """(path below the connector, pipeline id) for every pipeline the connector sends to."""
        return []


@dataclass(frozen=True)
class ComponentId:
    """A component's id as the config writes it: `type` or `type/name`."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ComponentId:
        type_name, _, name = str(text).partition("/")
        return cls(type_name.strip(), name.strip())

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


class Role(enum.Enum):
    """Where the service places a processor in a pipeline: the table the graph is built from."""

    TRANSFORM = "transform"  # process(payload) -> payload | None, in the order the pipeline lists it
    ADMISSION = "admission"  # also holds a request's place in the memory budget before it is read
    BATCH = "batch"  # settings only: the sender batches what it leases from the queue
    STAGE = "stage"  # takes over the rest of the pipeline: buffers, then writes to the export queues


@dataclass(frozen=True)
class Factory:
    """What the registry knows of a component type: its config model, how to make one, its signals and role."""

    type: str
    config: builtins.type[ComponentConfig]  # the field `type` shadows the builtin here
    create: Callable[..., Any]
    signals: tuple[str, ...] = ("traces", "metrics", "logs")
    role: Role = Role.TRANSFORM
