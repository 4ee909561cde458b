"""The `attributes` processor: act on span, log record and data point attributes.

Every otelcol action (actions.py) with `include` / `exclude` match properties
(matching.py). For metrics, include/exclude select whole metrics by metric_names alone: otelcol
0.165 accepts `resources` there and does not read it for metrics (spans and logs use it).

Speed: the common edge case is "upsert a few constant attributes on everything". When no
include/exclude is set and none of the action keys occurs anywhere in the received bytes,
no record can carry them, so the processor hands the prebuilt attributes to the payload
(Payload.defer_attributes): a queue stores them next to the request and adds them to every
record, without decoding the records (appender.py), when the record is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import KeyValue, KeyValueList

from edgeagent.component import Factory
from edgeagent.processors.actions import Actions, ActionsConfig
from edgeagent.processors.matching import IncludeExclude, MatchProperties
from edgeagent.signals import Payload, Signal
from otel.shape import data_points


class AttributesConfig(ActionsConfig):
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None

    def warnings_for(self, signal: str) -> list[tuple[str, str]]:
        if signal != "metrics":
            return []
        return [(f"{key}::resources", "has no effect in metrics pipelines: otelcol 0.165 selects metrics by "
                 "metric_names alone (resources select spans and log records)")
                for key, block in (("include", self.include), ("exclude", self.exclude))
                if block is not None and block.resources]

    def unfit_for(self, signal: str) -> tuple[str, str] | None:
        for key, block in (("include", self.include), ("exclude", self.exclude)):
            if block is not None:
                try:
                    block.check_for(Signal.parse(signal))
                except ValueError as problem:
                    return key, str(problem)
        return None


def records(signal: Signal, message: Any) -> Iterator[Any]:
    """Every record the processor works on: spans, log records or metric data points."""
    for _, _, record in signal.shape.records(message):
        yield record


def _key_scan(keys: list[bytes], shortest: int = 8) -> list[tuple[bytes, list[bytes]]]:
    """Keys grouped under their common prefix, so that keys like `telemetryflow.workspace.id` and
    `telemetryflow.tenant.id` cost one search of the request (bytes.__contains__, about 4 GB/s),
    not one each; the keys themselves are searched only when their prefix occurs."""
    groups: list[tuple[bytes, list[bytes]]] = []
    for key in sorted(keys):
        if groups:
            prefix = _common_prefix(groups[-1][0], key)
            if len(prefix) >= shortest:
                groups[-1] = (prefix, groups[-1][1] + [key])
                continue
        groups.append((key, [key]))
    return groups


class AttributesProcessor:
    def __init__(self, component_id: str, config: AttributesConfig, host: Any = None):
        self.id = component_id
        self.actions = Actions(config.actions)
        self.selection = IncludeExclude(config.include, config.exclude)
        self.metric_selection = IncludeExclude(_names_only(config.include), _names_only(config.exclude))
        appends = None if self.selection.active else self.actions.constant_appends()
        prebuilt = appends or []
        self._key_scan = _key_scan([key.encode() for key, _ in prebuilt])
        self._appended = KeyValueList(values=[KeyValue(key=key, value=value) for key, value in prebuilt]) \
            .SerializeToString() if prebuilt else b""

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def process(self, payload: Payload) -> Payload:
        # a key absent from the received bytes (and from what an earlier processor deferred) is in no record
        if self._appended and payload.raw is not None and not payload.changed \
                and not any(prefix in data and any(key in data for key in keys)
                            for prefix, keys in self._key_scan for data in (payload.raw, payload.deferred)):
            payload.defer_attributes(self._appended)
            return payload
        message = payload.view()
        metadata, address = payload.metadata, payload.client_address
        changed = False
        selection = self.metric_selection if payload.signal is Signal.METRICS else self.selection
        if selection.active:
            for attributes in _selected(payload.signal, message, selection):
                changed |= self.actions.apply(attributes, metadata, address)
        else:
            for record in records(payload.signal, message):
                changed |= self.actions.apply(record.attributes, metadata, address)
        if changed:
            payload.mark_changed()
        return payload


FACTORY = Factory("attributes", AttributesConfig, AttributesProcessor)


def _selected(signal: Signal, message: Any, selection: IncludeExclude) -> Iterator[Any]:
    """The attribute lists of the spans, log records or metrics' data points `selection` selects."""
    shape = signal.shape
    kind = {Signal.TRACES: "span", Signal.LOGS: "log", Signal.METRICS: "metric"}[signal]
    for group in shape.groups_of(message):
        selects = selection.selector(kind, group.resource)
        for scope in shape.scopes_of(group):
            for item in shape.items_of(scope):
                if selects(scope.scope, item):
                    if signal is Signal.METRICS:
                        yield from (point.attributes for point in data_points(item))
                    else:
                        yield item.attributes


def _names_only(block: MatchProperties | None) -> MatchProperties | None:
    """What of a block selects metrics in otelcol: metric_names alone (its resources select none)."""
    if block is None or not block.metric_names:
        return None
    return MatchProperties(match_type=block.match_type, regexp=block.regexp, metric_names=block.metric_names)


def _common_prefix(first: bytes, second: bytes) -> bytes:
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return first[:length]
