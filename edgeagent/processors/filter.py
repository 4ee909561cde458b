"""The `filter` processor: drop spans, log records and metrics by otelcol's legacy match properties.

    spans:   include / exclude with the match properties of matching.py
    logs:    include / exclude with match_type, resource_attributes, record_attributes,
             severity_texts, severity_number {min, match_undefined}, bodies
    metrics: include / exclude with match_type (strict | regexp), metric_names, resource_attributes

An item is kept when it matches `include` (if set) and does not match `exclude` (if set).
Dropped items are counted (otelcol_processor_filter_*_filtered), never errors. Resources and
scopes left empty are removed; a request left empty stops in the pipeline (the client
still gets its OK). OTTL conditions are not supported.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.processors.matching import (
    AttributeMatch,
    IncludeExclude,
    MatchProperties,
    RegexpOptions,
    SeverityNumberMatch,
)
from edgeagent.signals import Payload, Signal, resource_groups

_OTTL_KEYS = ("traces", "trace_conditions", "metric_conditions", "log_conditions", "profile_conditions", "profiles")


class LogMatch(ComponentConfig):
    match_type: Literal["strict", "regexp"] = "strict"
    resource_attributes: list[AttributeMatch] = Field(default_factory=list)
    record_attributes: list[AttributeMatch] = Field(default_factory=list)
    severity_texts: list[str] = Field(default_factory=list)
    severity_number: SeverityNumberMatch | None = None
    bodies: list[str] = Field(default_factory=list)

    def properties(self) -> MatchProperties:
        return MatchProperties(match_type=self.match_type, resources=self.resource_attributes,
                               attributes=self.record_attributes, log_severity_texts=self.severity_texts,
                               log_severity_number=self.severity_number, log_bodies=self.bodies)


class MetricMatch(ComponentConfig):
    match_type: Literal["strict", "regexp"] = "strict"
    regexp: RegexpOptions | None = None
    metric_names: list[str] = Field(default_factory=list)
    resource_attributes: list[AttributeMatch] = Field(default_factory=list)

    def properties(self) -> MatchProperties:
        return MatchProperties(match_type=self.match_type, metric_names=self.metric_names,
                               resources=self.resource_attributes)


class _Filters(ComponentConfig):
    """include / exclude of one signal; subclasses say which signal and how a block becomes match properties."""

    signal: ClassVar[Signal]
    include: Any = None
    exclude: Any = None

    @staticmethod
    def _properties(block: Any) -> MatchProperties:
        return block.properties()

    @model_validator(mode="after")
    def _check(self) -> _Filters:
        for block in (self.include, self.exclude):
            if block is not None:
                self._properties(block).check_for(self.signal)
        return self

    def selection(self) -> IncludeExclude:
        return IncludeExclude(*(self._properties(block) if block is not None else None
                                for block in (self.include, self.exclude)))


class SpanFilters(_Filters):
    signal: ClassVar[Signal] = Signal.TRACES
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None

    @staticmethod
    def _properties(block: MatchProperties) -> MatchProperties:
        return block


class LogFilters(_Filters):
    signal: ClassVar[Signal] = Signal.LOGS
    include: LogMatch | None = None
    exclude: LogMatch | None = None


class MetricFilters(_Filters):
    signal: ClassVar[Signal] = Signal.METRICS
    include: MetricMatch | None = None
    exclude: MetricMatch | None = None
    regexp: RegexpOptions | None = None


class FilterConfig(ComponentConfig):
    error_mode: Literal["ignore", "silent", "propagate"] = "propagate"
    spans: SpanFilters = Field(default_factory=SpanFilters)
    logs: LogFilters = Field(default_factory=LogFilters)
    metrics: MetricFilters = Field(default_factory=MetricFilters)

    @model_validator(mode="before")
    @classmethod
    def _no_ottl(cls, data: Any) -> Any:
        if isinstance(data, dict):
            used = [key for key in _OTTL_KEYS if key in data]
            if used:
                raise ValueError(f"{', '.join(used)}: OTTL conditions are not supported; use spans, logs or "
                                 f"metrics with include/exclude match properties")
        return data


class FilterProcessor:
    def __init__(self, component_id: str, config: FilterConfig, host: Any = None):
        self.id = component_id
        self.host = host
        self.spans = config.spans.selection()
        self.logs = config.logs.selection()
        self.metrics = config.metrics.selection()

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def process(self, payload: Payload) -> Payload | None:
        signal = payload.signal
        selection = {Signal.TRACES: self.spans, Signal.LOGS: self.logs, Signal.METRICS: self.metrics}[signal]
        if not selection.active:
            return payload
        message = payload.view()
        before = payload.items
        dropped = _filter(signal, message, selection)
        if not dropped:
            return payload
        payload.mark_changed(recount=True)
        if self.host is not None:
            name = {Signal.TRACES: "spans", Signal.LOGS: "logs", Signal.METRICS: "datapoints"}[signal]
            self.host.counter_inc(f"otelcol_processor_filter_{name}_filtered", before - payload.items, self.id)
        return payload if len(resource_groups(signal, message)) else None


_KIND = {Signal.TRACES: "span", Signal.LOGS: "log", Signal.METRICS: "metric"}  # what the matcher selects


def _filter(signal: Signal, message: Any, selection: IncludeExclude) -> bool:
    """Remove unselected items in place, then empty scopes and resources; returns whether anything was removed."""
    shape, kind = signal.shape, _KIND[signal]
    groups = shape.groups_of(message)
    removed = False
    for group_index in reversed(range(len(groups))):
        group = groups[group_index]
        scopes = shape.scopes_of(group)
        for scope_index in reversed(range(len(scopes))):
            scope = scopes[scope_index]
            items = shape.items_of(scope)
            keep = [selection.selects(kind, group.resource, scope.scope, item) for item in items]
            if all(keep):
                continue
            removed = True
            for index in reversed(range(len(keep))):
                if not keep[index]:
                    del items[index]
            if not len(items):
                del scopes[scope_index]
        if not len(scopes):
            del groups[group_index]
    return removed


FACTORY = Factory("filter", FilterConfig, FilterProcessor)
