"""The filter processor's OTTL conditions: their config forms and how they drop telemetry.

Two forms, as otelcol 0.165 reads them:

    trace_conditions:                     # context inferred per condition from its paths
      - span.name == "healthz"
      - resource.attributes["env"] == "dev"
    metric_conditions:                    # or groups: an explicit context, an error_mode of their own
      - context: datapoint
        error_mode: propagate
        conditions: ['attributes["debug"] == true']

    traces: {resource: [...], span: [...], spanevent: [...]}        # the older explicit lists
    metrics: {resource: [...], metric: [...], datapoint: [...]}
    logs: {resource: [...], log_record: [...]}

Each condition is parsed and compiled at validation and refused at its own YAML path
(`trace_conditions::1`, `traces::span::0`) with the column. Telemetry is walked from resource
to scope to item (span, metric, log record) to sub-item (span event, data point); whatever
matches any condition of its level is removed, and what is under it is not looked at. A scope
or resource left empty is removed, and so is a metric whose data points are all removed (a
span whose events are all removed stays). Each group of `*_conditions` (a flat list is one
group) is one pass over the request, in order, as otelcol's consumers.

A condition that fails on an item (OttlEvalError): with `propagate` the item is kept, the walk
goes on, and the request then fails (the client gets a retryable error, as otelcol answers a
processor's error); with `ignore` or `silent` the condition counts as not matching. edgeagent
does not log per item under `ignore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import ScopeMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans
from pydantic import AfterValidator, Field, TypeAdapter, ValidationInfo, field_validator

from edgeagent.component import ComponentConfig
from otel.ottl import ConditionSequence, Context, ContextName, OttlEvalError, OttlSyntaxError, compile_condition
from otel.ottl.infer import infer_context
from otel.ottl.parser import parse
from otel.shape import Shape, data_points, keep_only

ErrorModeName = Literal["ignore", "silent", "propagate"]
TRACE_CONTEXTS: tuple[ContextName, ...] = ("resource", "scope", "span", "spanevent")
METRIC_CONTEXTS: tuple[ContextName, ...] = ("resource", "scope", "metric", "datapoint")
LOG_CONTEXTS: tuple[ContextName, ...] = ("resource", "scope", "log")


def error_mode_of(value: Any) -> Any:
    """otelcol reads error_mode in any case."""
    return value.lower() if isinstance(value, str) else value


def context_of(text: str, offered: Sequence[ContextName], context: str | None) -> ContextName:
    """The context `text` runs in: the explicit one, or the one inferred from its paths."""
    if context is not None:
        return context  # type: ignore[return-value]  # checked against `offered` by the group
    return infer_context(parse(text), offered, text)


def _refused(error: OttlSyntaxError, text: str, context: str | None) -> ValueError:
    where = f"OTTL {context} condition" if context else "OTTL condition"
    return ValueError(f"{where}: {error.describe(text)}")


def compiles(context: ContextName) -> AfterValidator:
    def check(text: str) -> str:
        try:
            compile_condition(text, context)
        except OttlSyntaxError as error:
            raise _refused(error, text, context) from None
        return text
    return AfterValidator(check)


def _infers(offered: tuple[ContextName, ...]) -> AfterValidator:
    def check(text: str, info: ValidationInfo) -> str:
        in_group = info.field_name == "conditions"
        if in_group and "context" not in info.data:
            return text  # the group's context is refused: its conditions cannot be checked against it
        explicit = info.data["context"] if in_group else None
        try:
            compile_condition(text, context_of(text, offered, explicit))
        except OttlSyntaxError as error:
            raise _refused(error, text, explicit) from None
        return text
    return AfterValidator(check)


class _Group(ComponentConfig):
    """One group of `*_conditions`: its conditions, a context (else inferred), an error_mode."""

    offered: ClassVar[tuple[ContextName, ...]]
    context: str | None = None
    error_mode: ErrorModeName | None = None
    conditions: list[str] = Field(default_factory=list)

    @field_validator("context")
    @classmethod
    def _known(cls, context: str | None) -> str | None:
        if context is not None and context not in cls.offered:
            raise ValueError(f"unknown context {context!r}; use one of {', '.join(cls.offered)}")
        return context

    @field_validator("error_mode", mode="before")
    @classmethod
    def _any_case(cls, mode: Any) -> Any:
        return error_mode_of(mode)


class TraceGroup(_Group):
    offered: ClassVar[tuple[ContextName, ...]] = TRACE_CONTEXTS
    conditions: list[Annotated[str, _infers(TRACE_CONTEXTS)]] = Field(default_factory=list)


class MetricGroup(_Group):
    offered: ClassVar[tuple[ContextName, ...]] = METRIC_CONTEXTS
    conditions: list[Annotated[str, _infers(METRIC_CONTEXTS)]] = Field(default_factory=list)


class LogGroup(_Group):
    offered: ClassVar[tuple[ContextName, ...]] = LOG_CONTEXTS
    conditions: list[Annotated[str, _infers(LOG_CONTEXTS)]] = Field(default_factory=list)


def _forms(group: type[_Group]) -> tuple[TypeAdapter[Any], TypeAdapter[Any]]:
    """The adapters of the flat form (conditions) and the advanced one (groups) of `group`'s signal."""
    return TypeAdapter(list[Annotated[str, _infers(group.offered)]]), TypeAdapter(list[group])  # type: ignore[valid-type]


_FORMS: dict[type[_Group], tuple[TypeAdapter[Any], TypeAdapter[Any]]] = {
    group: _forms(group) for group in (TraceGroup, MetricGroup, LogGroup)}


def groups_of(value: Any, group: type[_Group]) -> Any:
    """A `*_conditions` list as groups: a flat list of conditions is one group. Validated here
    so that a mistake is reported at its own index (`trace_conditions::1`)."""
    if not isinstance(value, list):
        return value  # the field's type refuses it
    if any(entry is None for entry in value):
        raise ValueError("condition cannot be empty")
    texts = [entry for entry in value if isinstance(entry, str)]
    if texts and len(texts) != len(value):
        raise ValueError("configuring multiple configuration styles is not supported, please use only Basic "
                         "configuration (a list of conditions) or only Advanced configuration (a list of "
                         "{context, error_mode, conditions})")
    flat, groups = _FORMS[group]
    if texts:
        return [group.model_construct(conditions=flat.validate_python(value))]
    return groups.validate_python(value)


class TraceLists(ComponentConfig):
    """`traces:` of the older explicit form."""

    resource: list[Annotated[str, compiles("resource")]] | None = None
    span: list[Annotated[str, compiles("span")]] | None = None
    spanevent: list[Annotated[str, compiles("spanevent")]] | None = None

    def conditions(self) -> list[tuple[str, ContextName]]:
        lists: tuple[tuple[ContextName, list[str] | None], ...] = (
            ("resource", self.resource), ("span", self.span), ("spanevent", self.spanevent))
        return [(text, context) for context, texts in lists for text in texts or ()]


# ---- running them ----------------------------------------------------------------------------

@dataclass
class Levels:
    """One pass: the conditions of each level, None where a level has none."""

    resource: ConditionSequence | None = None
    scope: ConditionSequence | None = None
    item: ConditionSequence | None = None
    sub: ConditionSequence | None = None  # span events, data points


def levels_of(texts: Sequence[tuple[str, ContextName]], error_mode: ErrorModeName) -> Levels:
    """The conditions (text, context) of one group sorted into their levels."""
    by_context: dict[ContextName, list[str]] = {}
    for text, context in texts:
        by_context.setdefault(context, []).append(text)
    levels = Levels()
    for context, conditions in by_context.items():
        sequence = ConditionSequence(conditions, context, error_mode)
        level = {"resource": "resource", "scope": "scope", "spanevent": "sub", "datapoint": "sub"}.get(context, "item")
        setattr(levels, level, sequence)
    return levels


class Walk:
    """Removes, in place, what a list of passes selects from one signal's requests."""

    def __init__(self, shape: Shape, kind: str, passes: list[Levels]):
        self.shape = shape
        self.kind = kind  # "span", "log", "metric"
        self.passes = passes
        self.errors: list[OttlEvalError] = []
        self.changed = False

    def run(self, request: Any) -> tuple[bool, list[OttlEvalError]]:
        """(whether anything was removed, the failures of `propagate` conditions)."""
        self.errors, self.changed = [], False
        for levels in self.passes:
            self._pass(request, levels)
        return self.changed, self.errors

    def _hit(self, sequence: ConditionSequence | None, ctx: Context) -> bool:
        if sequence is None:
            return False
        try:
            return sequence.matches(ctx)
        except OttlEvalError as error:
            self.errors.append(error)
            return False

    def _pass(self, request: Any, levels: Levels) -> None:
        shape = self.shape
        groups = shape.groups_of(request)
        below_resource = levels.scope or levels.item or levels.sub
        keep = []
        for group in groups:
            if self._hit(levels.resource, Context(group, _NO_SCOPE[self.kind])):
                keep.append(False)
                continue
            scopes = shape.scopes_of(group)
            if below_resource:
                self._drop(scopes, [not self._scope_goes(group, scope, levels) for scope in scopes])
            keep.append(len(scopes) > 0)
        self._drop(groups, keep)

    def _scope_goes(self, group: Any, scope: Any, levels: Levels) -> bool:
        """Whether a scope matches, or is left without items (or had none)."""
        if self._hit(levels.scope, Context(group, scope)):
            return True
        if levels.item or levels.sub:
            return self._items(group, scope, levels)
        return not len(self.shape.items_of(scope))

    def _items(self, group: Any, scope: Any, levels: Levels) -> bool:
        """Walks one scope's items; True when none is left."""
        items = self.shape.items_of(scope)
        keep = []
        for item in items:
            ctx = self._context(group, scope, item)
            gone = self._hit(levels.item, ctx) or levels.sub is not None and self._subs(ctx, item, levels.sub)
            keep.append(not gone)
        self._drop(items, keep)
        return not len(items)

    def _subs(self, ctx: Context, item: Any, sequence: ConditionSequence) -> bool:
        """Walks the events of a span or the data points of a metric; True when the item must go
        (a metric of some data kind whose points are all gone)."""
        if self.kind == "span":
            keep = []
            for event in item.events:
                ctx.event = event
                keep.append(not self._hit(sequence, ctx))
            self._drop(item.events, keep)
            return False
        if item.WhichOneof("data") is None:
            return False
        points = data_points(item)
        keep = []
        for point in points:
            ctx.point = point
            keep.append(not self._hit(sequence, ctx))
        self._drop(points, keep)
        return not len(points)

    def _context(self, group: Any, scope: Any, item: Any) -> Context:
        if self.kind == "span":
            return Context(group, scope, span=item)
        if self.kind == "metric":
            return Context(group, scope, metric=item)
        return Context(group, scope, record=item)

    def _drop(self, repeated: Any, keep: list[bool]) -> None:
        if keep_only(repeated, keep):
            self.changed = True


# what a resource condition's context holds as its scope: never read
_NO_SCOPE: dict[str, Any] = {"span": ScopeSpans(), "metric": ScopeMetrics(), "log": ScopeLogs()}
