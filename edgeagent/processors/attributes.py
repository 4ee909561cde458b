"""The `attributes` processor: insert, update, upsert and delete attributes.

It touches the records otelcol's attributes processor touches: span attributes, log
record attributes and metric data point attributes.

Speed: the common edge case is "upsert a few constant attributes on everything". When
none of the action keys occurs anywhere in the received bytes, no record can carry them,
so the processor appends the prebuilt attributes to each record without looking at the
existing ones: it merges a serialized record holding only those attributes into each
record (protobuf appends repeated fields on merge), one C call per record.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.signals import Payload, Signal

_SUPPORTED_ACTIONS = ("insert", "update", "upsert", "delete")


class AttributeAction(ComponentConfig):
    key: str = Field(min_length=1)
    action: Literal["insert", "update", "upsert", "delete", "hash", "extract", "convert"]
    value: Any = None
    from_attribute: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "AttributeAction":
        if self.action not in _SUPPORTED_ACTIONS:
            raise ValueError(f"action {self.action!r} is not supported yet; supported: {', '.join(_SUPPORTED_ACTIONS)}")
        if self.action != "delete":
            if (self.value is None) == (self.from_attribute is None):
                raise ValueError(f"action {self.action!r} needs exactly one of value or from_attribute")
            if self.value is not None:
                to_any_value(self.value)
        return self


class AttributesConfig(ComponentConfig):
    actions: list[AttributeAction] = Field(min_length=1)


def to_any_value(value: Any) -> AnyValue:
    """A YAML scalar as an OTLP AnyValue, with the type YAML gave it."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    raise ValueError(f"value must be a string, number or boolean, not {type(value).__name__}")


def records(signal: Signal, message: Any) -> Iterator[Any]:
    """Every record the processor works on: spans, log records or metric data points."""
    if signal is Signal.TRACES:
        for rs in message.resource_spans:
            for scope in rs.scope_spans:
                yield from scope.spans
    elif signal is Signal.LOGS:
        for rl in message.resource_logs:
            for scope in rl.scope_logs:
                yield from scope.log_records
    else:
        for rm in message.resource_metrics:
            for scope in rm.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is not None:
                        yield from getattr(metric, kind).data_points


def _find(attributes: Any, key: str) -> int:
    for index, kv in enumerate(attributes):
        if kv.key == key:
            return index
    return -1


class AttributesProcessor:
    def __init__(self, component_id: str, config: AttributesConfig, host: Any = None):
        self.id = component_id
        self.actions = [(a.action, a.key, to_any_value(a.value) if a.value is not None else None, a.from_attribute)
                        for a in config.actions]
        appends_only = all(action in ("insert", "upsert") and value is not None for action, _, value, _ in self.actions)
        keys = [key for _, key, _, _ in self.actions]
        self._append_only = appends_only and len(set(keys)) == len(keys)
        # a key absent from the received bytes is absent from every record (bytes.__contains__ is a fast search)
        self._key_bytes = [key.encode() for key in keys]
        self._prebuilt = [KeyValue(key=key, value=value) for _, key, value, _ in self.actions] if self._append_only else []
        self._templates: dict[type, bytes] = {}

    def _append_everywhere(self, signal: Signal, message: Any) -> None:
        if signal is Signal.METRICS:
            for point in records(signal, message):
                point.MergeFromString(self._template(type(point)))
            return
        groups = message.resource_spans if signal is Signal.TRACES else message.resource_logs
        for group in groups:
            for scope in (group.scope_spans if signal is Signal.TRACES else group.scope_logs):
                items = scope.spans if signal is Signal.TRACES else scope.log_records
                if items:
                    template = self._template(type(items[0]))
                    for item in items:
                        item.MergeFromString(template)

    def _template(self, record_class: type) -> bytes:
        """A serialized record of this class that holds only the prebuilt attributes."""
        template = self._templates.get(record_class)
        if template is None:
            record = record_class()
            record.attributes.extend(self._prebuilt)
            template = self._templates[record_class] = record.SerializeToString()
        return template

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def process(self, payload: Payload) -> Payload:
        if self._append_only and payload.raw is not None and not payload.changed \
                and not any(key in payload.raw for key in self._key_bytes):
            self._append_everywhere(payload.signal, payload.mutable_message())
            return payload
        for record in records(payload.signal, payload.mutable_message()):
            self.apply(record.attributes)
        return payload

    def apply(self, attributes: Any) -> None:
        for action, key, value, from_attribute in self.actions:
            index = _find(attributes, key)
            if action == "delete":
                if index >= 0:
                    del attributes[index]
                continue
            if from_attribute is not None:
                source = _find(attributes, from_attribute)
                if source < 0:
                    continue
                value = attributes[source].value
            if index >= 0:
                if action in ("update", "upsert"):
                    attributes[index].value.CopyFrom(value)
            elif action in ("insert", "upsert"):
                attributes.add(key=key).value.CopyFrom(value)


FACTORY = Factory("attributes", AttributesConfig, AttributesProcessor)
