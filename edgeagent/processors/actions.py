"""Attribute actions as otelcol's attributes and resource processors define them.

insert, update, upsert (value, from_attribute or from_context, and `default_value` for when
the source has nothing), delete and hash (key and/or pattern over keys), extract (named regexp
groups from a string attribute) and convert (to int, double or string). Each action reports
whether it changed anything, so an unchanged request is never re-serialized.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from pydantic import Field, field_validator, model_validator

from edgeagent.component import ComponentConfig
from edgeagent.configdecode import Reference
from otel.goregex import GoRegex, compile_go_regex
from otel.values import go_int64, go_parse_float, go_parse_int, value_as_string

ACTIONS = ("insert", "update", "upsert", "delete", "hash", "extract", "convert")


class ActionConfig(ComponentConfig):
    key: str = ""
    action: Literal["insert", "update", "upsert", "delete", "hash", "extract", "convert"]
    value: Any = None
    default_value: Any = None  # insert/update/upsert: used when from_attribute/from_context find nothing
    pattern: str | None = None
    from_attribute: str | None = None
    from_context: str | None = None
    converted_type: Literal["int", "double", "string"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _unset_references(cls, data: Any) -> Any:
        """`${env:X}` with X unset or empty (null to YAML) is no value to otelcol: another source or
        default_value takes its place. Left alone as the only source, it stays the empty text the
        variable's warning names, as the deployment guides expect."""
        if not isinstance(data, dict):
            return data
        sources = ("value", "from_attribute", "from_context", "default_value")
        unset = [key for key in sources if _no_value(data.get(key))]
        if unset and any(key not in unset and _given(key, data.get(key)) for key in sources):
            return {key: None if key in unset else item for key, item in data.items()}
        return data

    @field_validator("action", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> ActionConfig:
        sources = (self.value is not None) + bool(self.from_attribute) + bool(self.from_context)
        action = self.action
        if action in ("delete", "hash"):
            if not self.key and not self.pattern:
                raise ValueError(f"action {action!r} needs key, pattern or both")
        elif not self.key:
            raise ValueError(f"action {action!r} needs a key")
        if action in ("insert", "update", "upsert"):
            if sources > 1 or (sources == 0 and self.default_value is None):
                raise ValueError(f"action {action!r} needs exactly one of value, from_attribute or from_context "
                                 "(or only default_value)")
            if self.value is not None:
                to_any_value(self.value)
            if self.default_value is not None:
                to_any_value(self.default_value)
        elif action in ("delete", "hash") and (self.value is not None or self.from_attribute):
            raise ValueError(f"action {action!r} does not use value or from_attribute")
        elif action in ("extract", "convert") and sources:
            raise ValueError(f"action {action!r} does not use value, from_attribute or from_context")
        if action == "extract":
            if not self.pattern:
                raise ValueError("action 'extract' needs a pattern with named groups")
            compiled = _regex(self.pattern)
            if not any(compiled.group_names):
                raise ValueError("pattern has no named groups: write (?P<name>...) for each value to extract")
            if "" in compiled.group_names:
                raise ValueError("pattern has an unnamed group: every group must be named (?P<name>...)")
        elif self.pattern:
            if action not in ("delete", "hash"):  # otelcol refuses it elsewhere
                raise ValueError(f"action {action!r} does not use pattern")
            _regex(self.pattern)
        if action == "convert" and self.converted_type is None:
            raise ValueError("action 'convert' needs converted_type: int, double or string")
        if action != "convert" and self.converted_type is not None:
            raise ValueError(f"action {action!r} does not use converted_type")
        return self

    def ignored(self) -> list[str]:
        """Keys otelcol takes on this action and does nothing with: from_context on delete and hash,
        default_value beside an action that sets nothing."""
        if self.action in ("insert", "update", "upsert"):
            return []
        return [key for key in ("from_context", "default_value") if getattr(self, key) not in (None, "")]


def ignored_warnings(field: str, actions: list[ActionConfig]) -> list[str]:
    return [f"{field}::{index}::{key} has no effect: otelcol 0.165 takes it on a {action.action} action "
            f"and ignores it, as edgeagent does" for index, action in enumerate(actions) for key in action.ignored()]


class ActionsConfig(ComponentConfig):
    actions: list[ActionConfig] = Field(min_length=1)

    def config_warnings(self) -> list[str]:
        return ignored_warnings("actions", self.actions)


def _no_value(item: Any) -> bool:
    """A whole-value reference whose text is null to YAML (an unset or empty variable, `~`, `null`)."""
    return isinstance(item, Reference) and item.value is None


def _given(key: str, item: Any) -> bool:
    """Whether a value source is set, as otelcol counts them: from_* when not empty, values when not null."""
    return bool(item) if key.startswith("from_") else item is not None


def _regex(pattern: str) -> GoRegex:
    try:
        return compile_go_regex(pattern)
    except ValueError as exc:
        raise ValueError(f"invalid pattern: {exc}") from None


def to_any_value(value: Any) -> AnyValue:
    """A YAML value as an OTLP AnyValue, keeping the type YAML gave it (maps and lists too; null is
    the empty value)."""
    out = AnyValue()
    if value is None:  # in a map or list: an empty value, as otelcol builds it
        pass
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, dict):
        for key, item in value.items():
            out.kvlist_value.values.add(key=str(key)).value.CopyFrom(to_any_value(item))
    elif isinstance(value, list):
        for item in value:
            out.array_value.values.add().CopyFrom(to_any_value(item))
    else:
        raise ValueError(f"value must be a string, number, boolean, map, list or null, not {type(value).__name__}")
    return out


def hash_value(value: AnyValue) -> None:
    """Replace a value with the hex SHA-256 of its bytes, as otelcol's hash action does today."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        data = value.string_value.encode()
    elif kind == "bool_value":
        data = b"\x01" if value.bool_value else b"\x00"
    elif kind == "int_value":
        data = struct.pack("<q", value.int_value)
    elif kind == "double_value":
        data = struct.pack("<d", value.double_value)
    else:  # bytes, maps, lists and empty values become "" (an empty string is hashed)
        value.string_value = ""
        return
    value.string_value = hashlib.sha256(data).hexdigest()


def convert_value(value: AnyValue, target: str) -> bool:
    """Convert in place as otelcol does; a value that does not convert is left as it is."""
    kind = value.WhichOneof("value")
    if target == "string":
        if kind == "string_value":
            return False
        value.string_value = value_as_string(value)
        return True
    if target == "int":
        if kind == "double_value":
            value.int_value = go_int64(value.double_value)
        elif kind == "bool_value":
            value.int_value = int(value.bool_value)
        elif kind == "string_value":
            try:
                value.int_value = go_parse_int(value.string_value)
            except ValueError:
                return False
        else:
            return False
        return True
    if kind == "int_value":
        value.double_value = float(value.int_value)
    elif kind == "bool_value":
        value.double_value = 1.0 if value.bool_value else 0.0
    elif kind == "string_value":
        try:
            value.double_value = go_parse_float(value.string_value)
        except ValueError:
            return False
    else:
        return False
    return True


def context_value(key: str, metadata: dict[str, str], client_address: str) -> str | None:
    """from_context: `metadata.<name>`, `client.address`, or a bare metadata key (otelcol's fallback).
    client.address is always found, "" when the request came from no IP address, as in otelcol."""
    if key == "client.address":
        return client_address
    if key.startswith("auth."):
        return None  # no authenticator attaches attributes to requests
    name = key[len("metadata."):] if key.startswith("metadata.") else key
    return metadata.get(name.lower())


@dataclass(frozen=True)
class _Step:
    """One compiled action."""

    action: str
    key: str
    value: AnyValue | None  # the constant of insert/update/upsert
    default: AnyValue | None  # default_value: when from_attribute / from_context find nothing
    from_attribute: str | None
    from_context: str | None
    pattern: GoRegex | None
    converted_type: str | None


class Actions:
    """Compiled actions; `apply(attributes, metadata, client_address)` runs them on one attribute list."""

    def __init__(self, configs: list[ActionConfig]):
        self.steps: list[_Step] = []
        for config in configs:
            value = to_any_value(config.value) if config.value is not None else None
            default = to_any_value(config.default_value) if config.default_value is not None else None
            pattern = _regex(config.pattern) if config.pattern else None
            self.steps.append(_Step(config.action, config.key, value, default, config.from_attribute,
                                    config.from_context, pattern, config.converted_type))
        self.uses_context = any(step.from_context for step in self.steps)

    def constant_appends(self) -> list[tuple[str, AnyValue]] | None:
        """When every action inserts or upserts a constant under distinct keys: those (key, value) pairs."""
        keys = [step.key for step in self.steps]
        if all(step.action in ("insert", "upsert") and step.value is not None for step in self.steps) \
                and len(set(keys)) == len(keys):
            return [(step.key, step.value) for step in self.steps if step.value is not None]
        return None

    def apply(self, attributes: Any, metadata: dict[str, str], client_address: str) -> bool:
        changed = False
        for step in self.steps:
            action = step.action
            if action in ("insert", "update", "upsert"):
                changed = _set(attributes, step, metadata, client_address) or changed
            elif action == "delete":
                changed = _delete(attributes, step) or changed
            elif action == "hash":
                changed = _hash(attributes, step) or changed
            elif action == "extract":
                changed = _extract(attributes, step) or changed
            else:  # convert
                assert step.converted_type is not None, "the config requires converted_type for convert"
                index = _find(attributes, step.key)
                if index >= 0 and convert_value(attributes[index].value, step.converted_type):
                    changed = True
        return changed


def _source(attributes: Any, step: _Step, metadata: dict[str, str], client_address: str) -> AnyValue | None:
    """The value to set: the constant, the request context's, another attribute's, else default_value."""
    if step.value is not None:
        return step.value
    if step.from_context:
        text = context_value(step.from_context, metadata, client_address)
        if text is not None:
            return AnyValue(string_value=text)
    elif step.from_attribute:  # "" names no attribute, as in otelcol
        index = _find(attributes, step.from_attribute)
        if index >= 0:
            source = AnyValue()
            source.CopyFrom(attributes[index].value)
            return source
    return step.default


def _set(attributes: Any, step: _Step, metadata: dict[str, str], client_address: str) -> bool:
    """insert, update or upsert `step.key` from a constant, another attribute or the request context."""
    source = _source(attributes, step, metadata, client_address)
    if source is None:
        return False
    index = _find(attributes, step.key)
    if index >= 0:
        if step.action == "insert":
            return False
        attributes[index].value.CopyFrom(source)
        return True
    if step.action == "update":
        return False
    attributes.add(key=step.key).value.CopyFrom(source)
    return True


def _matches(name: str, step: _Step) -> bool:
    return name == step.key or (step.pattern is not None and step.pattern.search(name))


def _delete(attributes: Any, step: _Step) -> bool:
    """Keep the survivors in order, moved forward over the deleted, then cut the tail once: deleting
    one at a time moves every attribute behind each, quadratic on a span with 100,000s of them."""
    kept = 0
    for index, kv in enumerate(attributes):
        if not _matches(kv.key, step):
            if kept != index:
                attributes[kept].CopyFrom(kv)
            kept += 1
    if kept == len(attributes):
        return False
    del attributes[kept:]
    return True


def _hash(attributes: Any, step: _Step) -> bool:
    """otelcol hashes `key`, then every key the pattern matches: a key matched by both is hashed twice."""
    changed = False
    for kv in attributes:
        for _ in range((kv.key == step.key) + (step.pattern is not None and step.pattern.search(kv.key))):
            hash_value(kv.value)
            changed = True
    return changed


def _extract(attributes: Any, step: _Step) -> bool:
    """The named groups of `step.pattern` in the string value of `step.key`, as attributes."""
    index = _find(attributes, step.key)
    if index < 0 or attributes[index].value.WhichOneof("value") != "string_value":
        return False
    assert step.pattern is not None, "the config requires a pattern for extract"
    groups = step.pattern.named_groups(attributes[index].value.string_value)
    if groups is None:
        return False
    changed = False
    for name, text in groups.items():
        target = _find(attributes, name)
        if target >= 0:
            attributes[target].value.Clear()
            attributes[target].value.string_value = text
        else:
            attributes.add(key=name).value.string_value = text
        changed = True
    return changed


def _find(attributes: Any, key: str) -> int:
    for index, kv in enumerate(attributes):
        if kv.key == key:
            return index
    return -1
