"""The `filter` processor: drop spans, span events, metrics, data points and log records that
match OTTL conditions (filter_conditions.py), or by otelcol's legacy match properties:

    spans:   include / exclude with the match properties of matching.py
    logs:    include / exclude with match_type, resource_attributes, record_attributes,
             severity_texts, severity_number {min, match_undefined}, bodies
    metrics: include / exclude with match_type (strict | regexp), metric_names, resource_attributes

An item is kept when it matches `include` (if set) and does not match `exclude` (if set); a logs
or metrics block that names nothing to match is no filter, as otelcol builds none of it. For
metrics otelcol makes two filters of a block, one of metric_names and one of resource_attributes:
an exclude with both drops the metrics named and every metric of the resources matched.
Dropped items are counted (otelcol_processor_filter_*_filtered). Scopes without items and
resources without scopes are removed, those that came empty too (as otelcol does); a request
left empty stops in the pipeline (the client still gets its OK).
For one signal the legacy keys and the OTTL ones exclude each other, as otelcol's validation
says; `spans` beside `trace_conditions`, which otelcol would silently ignore, is refused too.
Profiles are not a signal edgeagent carries: `profiles` and `profile_conditions` are refused.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.errors import RetryableError
from edgeagent.processors.filter_conditions import (
    ErrorModeName,
    Levels,
    LogGroup,
    MetricGroup,
    TraceGroup,
    TraceLists,
    Walk,
    compiles,
    context_of,
    error_mode_of,
    groups_of,
    levels_of,
)
from edgeagent.processors.matching import (
    AttributeMatch,
    IncludeExclude,
    MatchProperties,
    RegexpOptions,
    SeverityNumberMatch,
    require_match_type,
    valued,
)
from edgeagent.signals import Payload, Signal, resource_groups
from otel.ottl import ContextName
from otel.shape import keep_only

_PROFILE_KEYS = ("profile_conditions", "profiles")


class LogMatch(ComponentConfig):
    match_type: Literal["strict", "regexp"] | None = None  # no default, as in otelcol: see matching.py
    resource_attributes: list[AttributeMatch] = Field(default_factory=list)
    record_attributes: list[AttributeMatch] = Field(default_factory=list)
    severity_texts: list[str] = Field(default_factory=list)
    severity_number: SeverityNumberMatch | None = None
    bodies: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _match_type(self) -> LogMatch:
        require_match_type(self.match_type, {
            "resource_attributes": valued(self.resource_attributes),
            "record_attributes": valued(self.record_attributes),
            "severity_texts": bool(self.severity_texts), "bodies": bool(self.bodies)})
        return self

    def empty(self) -> bool:
        """Names nothing to match: otelcol builds no filter of it (filterprocessor's isEmpty)."""
        return not (self.resource_attributes or self.record_attributes or self.severity_texts or self.bodies
                    or self.severity_number is not None)

    def properties(self) -> MatchProperties:
        return MatchProperties(match_type=self.match_type, resources=self.resource_attributes,
                               attributes=self.record_attributes, log_severity_texts=self.severity_texts,
                               log_severity_number=self.severity_number, log_bodies=self.bodies)


class MetricMatch(ComponentConfig):
    match_type: Literal["strict", "regexp"] | None = None  # no default, as in otelcol: see matching.py
    regexp: RegexpOptions | None = None
    metric_names: list[str] = Field(default_factory=list)
    resource_attributes: list[AttributeMatch] = Field(default_factory=list)

    @model_validator(mode="after")
    def _match_type(self) -> MetricMatch:
        require_match_type(self.match_type, {"metric_names": bool(self.metric_names),
                                             "resource_attributes": valued(self.resource_attributes)})
        return self

    def empty(self) -> bool:
        """Names nothing to match: otelcol's filters of it are none (filtermetric's newExpr)."""
        return not (self.metric_names or self.resource_attributes)

    def properties(self) -> MatchProperties:
        return MatchProperties(match_type=self.match_type, metric_names=self.metric_names,
                               resources=self.resource_attributes)

    def parts(self) -> list[MatchProperties]:
        """The two filters otelcol makes of the block: metric_names over metrics and
        resource_attributes over resources (each left out when unset)."""
        return [MatchProperties(match_type=self.match_type, metric_names=names, resources=resources)
                for names, resources in ((self.metric_names, []), ([], self.resource_attributes))
                if names or resources]


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
        for block in self.blocks():
            if block is not None:
                self._properties(block).check_for(self.signal)
        return self

    @staticmethod
    def _empty(block: Any) -> bool:
        return bool(block.empty())

    def blocks(self) -> tuple[Any, Any]:
        """include and exclude, each None when unset or, for logs and metrics, naming nothing to match."""
        include, exclude = (None if block is None or self._empty(block) else block
                            for block in (self.include, self.exclude))
        return include, exclude

    def selection(self) -> IncludeExclude:
        return IncludeExclude(*(self._properties(block) if block is not None else None for block in self.blocks()))


class SpanFilters(_Filters):
    signal: ClassVar[Signal] = Signal.TRACES
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None

    @staticmethod
    def _properties(block: MatchProperties) -> MatchProperties:
        return block

    @staticmethod
    def _empty(block: MatchProperties) -> bool:
        return False  # a span block naming nothing is refused when it is checked, as otelcol refuses it


class LogFilters(_Filters):
    signal: ClassVar[Signal] = Signal.LOGS
    include: LogMatch | None = None
    exclude: LogMatch | None = None
    resource: list[Annotated[str, compiles("resource")]] | None = None
    log_record: list[Annotated[str, compiles("log")]] | None = None

    def conditions(self) -> list[tuple[str, ContextName]]:
        lists: tuple[tuple[ContextName, list[str] | None], ...] = (("resource", self.resource),
                                                                    ("log", self.log_record))
        return [(text, context) for context, texts in lists for text in texts or ()]


class MetricFilters(_Filters):
    signal: ClassVar[Signal] = Signal.METRICS
    include: MetricMatch | None = None
    exclude: MetricMatch | None = None
    regexp: RegexpOptions | None = None
    resource: list[Annotated[str, compiles("resource")]] | None = None
    metric: list[Annotated[str, compiles("metric")]] | None = None
    datapoint: list[Annotated[str, compiles("datapoint")]] | None = None

    def selection(self) -> IncludeExclude:
        """An include keeps what both its filters keep, as one block does; an exclude drops what
        either drops, so each of its parts excludes on its own."""
        include, exclude = self.blocks()
        return IncludeExclude(include.properties() if include is not None else None,
                              *(exclude.parts() if exclude is not None else ()))

    def conditions(self) -> list[tuple[str, ContextName]]:
        lists: tuple[tuple[ContextName, list[str] | None], ...] = (
            ("resource", self.resource), ("metric", self.metric), ("datapoint", self.datapoint))
        return [(text, context) for context, texts in lists for text in texts or ()]


class FilterConfig(ComponentConfig):
    error_mode: ErrorModeName = "ignore"
    spans: SpanFilters = Field(default_factory=SpanFilters)
    logs: LogFilters = Field(default_factory=LogFilters)
    metrics: MetricFilters = Field(default_factory=MetricFilters)
    traces: TraceLists = Field(default_factory=TraceLists)
    trace_conditions: list[TraceGroup] | None = None
    metric_conditions: list[MetricGroup] | None = None
    log_conditions: list[LogGroup] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_profiles(cls, data: Any) -> Any:
        if isinstance(data, dict):
            used = [key for key in _PROFILE_KEYS if key in data]
            if used:
                raise ValueError(f"{', '.join(used)}: edgeagent carries no profiles; remove the key")
        return data

    @field_validator("error_mode", mode="before")
    @classmethod
    def _any_case(cls, mode: Any) -> Any:
        return error_mode_of(mode)

    @field_validator("trace_conditions", "metric_conditions", "log_conditions", mode="before")
    @classmethod
    def _groups(cls, value: Any, info: Any) -> Any:
        group = {"trace_conditions": TraceGroup, "metric_conditions": MetricGroup, "log_conditions": LogGroup}
        return groups_of(value, group[info.field_name])

    @model_validator(mode="after")
    def _one_style_per_signal(self) -> FilterConfig:
        spans_legacy = self.spans.include is not None or self.spans.exclude is not None
        traces = self.traces
        traces_ottl = any(lists is not None for lists in (traces.resource, traces.span, traces.spanevent))
        metrics, logs = self.metrics, self.logs
        metrics_legacy = metrics.include is not None or metrics.exclude is not None
        metrics_ottl = any(lists is not None for lists in (metrics.resource, metrics.metric, metrics.datapoint))
        logs_legacy = logs.include is not None or logs.exclude is not None
        logs_ottl = logs.resource is not None or logs.log_record is not None
        clashes = [
            (self.trace_conditions is not None and traces_ottl,
             'cannot use context inferred trace conditions "trace_conditions" and the settings "traces.resource", '
             '"traces.span", "traces.spanevent" at the same time'),
            (self.trace_conditions is not None and spans_legacy,
             '"trace_conditions" and "spans.include" / "spans.exclude" cannot be used together (otelcol would '
             'ignore the spans settings)'),
            (self.metric_conditions is not None and (metrics_ottl or metrics_legacy),
             'cannot use context inferred metric conditions "metric_conditions" and the settings "metrics.resource", '
             '"metrics.metric", "metrics.datapoint", "metrics.include", "metrics.exclude" at the same time'),
            (self.log_conditions is not None and (logs_ottl or logs_legacy),
             'cannot use context inferred log conditions "log_conditions" and the settings "logs.resource", '
             '"logs.log_record", "logs.include", "logs.exclude" at the same time'),
            (traces_ottl and spans_legacy,
             'cannot use "traces.resource", "traces.span", "traces.spanevent" and the span settings "spans.include", '
             '"spans.exclude" at the same time'),
            (metrics_ottl and metrics_legacy,
             'cannot use "metrics.resource", "metrics.metric", "metrics.datapoint" and the settings '
             '"metrics.include", "metrics.exclude" at the same time'),
            (logs_ottl and logs_legacy,
             'cannot use "logs.resource", "logs.log_record" and the settings "logs.include", "logs.exclude" at '
             'the same time'),
        ]
        problems = [message for clash, message in clashes if clash]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def passes(self, signal: Signal) -> list[Levels]:
        """The OTTL passes over one signal's requests, in order; none when it uses no conditions."""
        groups: list[Any] | None = {Signal.TRACES: self.trace_conditions, Signal.METRICS: self.metric_conditions,
                                    Signal.LOGS: self.log_conditions}[signal]
        if groups is not None:
            return [levels_of([(text, context_of(text, group.offered, group.context)) for text in group.conditions],
                              group.error_mode or self.error_mode) for group in groups]
        lists = {Signal.TRACES: self.traces.conditions(), Signal.METRICS: self.metrics.conditions(),
                 Signal.LOGS: self.logs.conditions()}[signal]
        return [levels_of(lists, self.error_mode)] if lists else []


class FilterProcessor:
    def __init__(self, component_id: str, config: FilterConfig, host: Any = None):
        self.id = component_id
        self.host = host
        self.spans = config.spans.selection()
        self.logs = config.logs.selection()
        self.metrics = config.metrics.selection()
        self.walks = {signal: Walk(signal.shape, _KIND[signal], passes) for signal in Signal
                      if (passes := config.passes(signal))}

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def process(self, payload: Payload) -> Payload | None:
        signal = payload.signal
        walk = self.walks.get(signal)
        if walk is not None:
            return self._conditions(payload, walk)
        selection = {Signal.TRACES: self.spans, Signal.LOGS: self.logs, Signal.METRICS: self.metrics}[signal]
        if not selection.active:
            return payload
        message = payload.view()
        before = payload.items
        dropped = _filter(signal, message, selection)
        if not dropped:
            return payload
        payload.mark_changed(recount=True)
        self._count(signal, before - payload.items)
        return payload if len(resource_groups(signal, message)) else None

    def _conditions(self, payload: Payload, walk: Walk) -> Payload | None:
        signal = payload.signal
        message = payload.view()
        before = payload.items
        changed, errors = walk.run(message)
        if changed:
            payload.mark_changed(recount=True)
            self._count(signal, before - payload.items)
        if errors:
            raise RetryableError(f"filter processor {self.id}: failed processing {signal.label}: {errors[0]}")
        return payload if len(resource_groups(signal, message)) else None

    def _count(self, signal: Signal, dropped: int) -> None:
        if self.host is not None and dropped:
            name = {Signal.TRACES: "spans", Signal.LOGS: "logs", Signal.METRICS: "datapoints"}[signal]
            self.host.counter_inc(f"otelcol_processor_filter_{name}_filtered", dropped, self.id)


_KIND = {Signal.TRACES: "span", Signal.LOGS: "log", Signal.METRICS: "metric"}  # what the matcher selects


def _filter(signal: Signal, message: Any, selection: IncludeExclude) -> bool:
    """Remove unselected items in place, then every empty scope and resource, those that came
    empty too, as otelcol does; returns whether anything was removed."""
    shape, kind = signal.shape, _KIND[signal]
    groups = shape.groups_of(message)
    removed = False
    for group in groups:
        scopes = shape.scopes_of(group)
        selects = selection.selector(kind, group.resource)
        for scope in scopes:
            items = shape.items_of(scope)
            removed |= keep_only(items, [selects(scope.scope, item) for item in items])
        removed |= keep_only(scopes, [len(shape.items_of(scope)) > 0 for scope in scopes])
    return keep_only(groups, [len(shape.scopes_of(group)) > 0 for group in groups]) or removed


FACTORY = Factory("filter", FilterConfig, FilterProcessor)
