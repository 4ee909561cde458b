"""Paths of OTTL's span, spanevent, log, metric, datapoint, resource and scope contexts, each compiled
into a getter that reads only its own field of the item being evaluated (the log, metric and
datapoint fields are in `signals`).

A path may name its context first (`span.name`, `resource.attributes["k"]`, `scope.name`, and
in spanevent conditions `spanevent.name`); without one it belongs to the condition's own
context, as otelcol rewrites it (`attributes["k"]` is `span.attributes["k"]` in a span condition
and `spanevent.attributes["k"]` in a spanevent one). A datapoint condition reads its metric's
fields as `metric.name`, a spanevent one its span's as `span.name`. Each context knows its own
enum symbols (`SPAN_KIND_*` and `STATUS_CODE_*` for spans, `SEVERITY_NUMBER_*` for logs,
`METRIC_DATA_TYPE_*`, `AGGREGATION_TEMPORALITY_*` and, for data points, `FLAG_*`).
`instrumentation_scope` is the older name of `scope`.

Ids read as OTTL's `.string` forms (lowercase hex, an absent parent as zeros). The raw id
(`trace_id` without `.string`), times as time values (`start_time`), `events` and `links` are
refused: otelcol compares the raw id to no literal, and the others need types conditions
here do not have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics, ScopeMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from otel.ottl import ast
from otel.ottl.errors import OttlEvalError, OttlSyntaxError
from otel.ottl.signals import (
    DATAPOINT_ENUMS,
    DATAPOINT_FIELDS,
    LOG_FIELDS,
    METRIC_ENUMS,
    METRIC_FIELDS,
    SEVERITY_ENUMS,
)
from otel.ottl.values import plain


@dataclass(slots=True)
class Context:
    """What one evaluation sees: the item's resource group, its scope, and the item: the span and
    (spanevent) the event, the log record, or the metric and (datapoint) the data point."""

    group: ResourceSpans | ResourceLogs | ResourceMetrics
    scope: ScopeSpans | ScopeLogs | ScopeMetrics
    span: Any = None  # Span
    event: Any = None  # Span.Event
    record: Any = None  # LogRecord
    metric: Any = None  # Metric
    point: Any = None  # a data point of `metric`, whatever its kind


Getter = Callable[[Context], Any]
ContextName = Literal["span", "spanevent", "log", "metric", "datapoint", "resource", "scope"]

KIND_NAMES = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
KIND_ENUMS = ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
              "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER")
ENUMS = {**{name: value for value, name in enumerate(KIND_ENUMS)},
         "STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}

_ABOVE = ("resource", "scope", "instrumentation_scope")
CONTEXTS: dict[str, tuple[str, ...]] = {"span": ("span", *_ABOVE), "spanevent": ("spanevent", "span", *_ABOVE),
                                        "log": ("log", *_ABOVE), "metric": ("metric", *_ABOVE),
                                        "datapoint": ("datapoint", "metric", *_ABOVE), "resource": ("resource",),
                                        "scope": _ABOVE}
CONTEXT_ENUMS: dict[str, dict[str, int]] = {"span": ENUMS, "spanevent": ENUMS, "log": SEVERITY_ENUMS,
                                            "metric": METRIC_ENUMS, "datapoint": DATAPOINT_ENUMS, "resource": {},
                                            "scope": {}}


def _hex(width: int, field: Callable[[Context], bytes]) -> Getter:
    zeros = "0" * width
    return lambda ctx: field(ctx).hex() or zeros


def _kind_text(names: tuple[str, ...]) -> Getter:
    def get(ctx: Context) -> str:
        kind = ctx.span.kind
        return names[kind] if 0 <= kind < len(names) else str(kind)
    return get


# (context, field names) -> getter; attributes are handled apart
_SPAN_FIELDS: dict[tuple[str, ...], Getter] = {
    ("name",): lambda ctx: ctx.span.name,
    ("kind",): lambda ctx: ctx.span.kind,
    ("kind", "string"): _kind_text(KIND_NAMES),
    ("kind", "deprecated_string"): _kind_text(KIND_ENUMS),
    ("status", "code"): lambda ctx: ctx.span.status.code,
    ("status", "message"): lambda ctx: ctx.span.status.message,
    ("trace_id", "string"): _hex(32, lambda ctx: ctx.span.trace_id),
    ("span_id", "string"): _hex(16, lambda ctx: ctx.span.span_id),
    ("parent_span_id", "string"): _hex(16, lambda ctx: ctx.span.parent_span_id),
    ("trace_state",): lambda ctx: ctx.span.trace_state,
    ("start_time_unix_nano",): lambda ctx: ctx.span.start_time_unix_nano,
    ("end_time_unix_nano",): lambda ctx: ctx.span.end_time_unix_nano,
    ("dropped_attributes_count",): lambda ctx: ctx.span.dropped_attributes_count,
    ("dropped_events_count",): lambda ctx: ctx.span.dropped_events_count,
    ("dropped_links_count",): lambda ctx: ctx.span.dropped_links_count,
    ("flags",): lambda ctx: ctx.span.flags,
}
_EVENT_FIELDS: dict[tuple[str, ...], Getter] = {
    ("name",): lambda ctx: ctx.event.name,
    ("time_unix_nano",): lambda ctx: ctx.event.time_unix_nano,
    ("dropped_attributes_count",): lambda ctx: ctx.event.dropped_attributes_count,
}
_RESOURCE_FIELDS: dict[tuple[str, ...], Getter] = {
    ("dropped_attributes_count",): lambda ctx: ctx.group.resource.dropped_attributes_count,
    ("schema_url",): lambda ctx: ctx.group.schema_url,
}
_SCOPE_FIELDS: dict[tuple[str, ...], Getter] = {
    ("name",): lambda ctx: ctx.scope.scope.name,
    ("version",): lambda ctx: ctx.scope.scope.version,
    ("dropped_attributes_count",): lambda ctx: ctx.scope.scope.dropped_attributes_count,
    ("schema_url",): lambda ctx: ctx.scope.schema_url,
}
_FIELDS = {"span": _SPAN_FIELDS, "spanevent": _EVENT_FIELDS, "resource": _RESOURCE_FIELDS,
           "scope": _SCOPE_FIELDS, "instrumentation_scope": _SCOPE_FIELDS, "log": LOG_FIELDS,
           "metric": METRIC_FIELDS, "datapoint": DATAPOINT_FIELDS}
_ATTRIBUTES: dict[str, Callable[[Context], Any]] = {
    "span": lambda ctx: ctx.span.attributes,
    "spanevent": lambda ctx: ctx.event.attributes,
    "log": lambda ctx: ctx.record.attributes,
    "datapoint": lambda ctx: ctx.point.attributes,
    "resource": lambda ctx: ctx.group.resource.attributes,
    "scope": lambda ctx: ctx.scope.scope.attributes,
    "instrumentation_scope": lambda ctx: ctx.scope.scope.attributes,
}
_REFUSED = {"trace_id": "use trace_id.string (otelcol's raw id equals no literal)",
            "span_id": "use span_id.string", "parent_span_id": "use parent_span_id.string",
            "start_time": "use start_time_unix_nano", "end_time": "use end_time_unix_nano",
            "time": "use time_unix_nano"}


def compile_path(path: ast.Path, context: ContextName) -> Getter:
    """The getter for `path` in a condition of `context`."""
    names = path.names
    if len(names) > 1 and names[0] in CONTEXTS[context]:
        owner, fields = names[0], names[1:]
    else:
        owner, fields = context, names
    if fields == ("attributes",) and owner in _ATTRIBUTES:
        return _attributes(_ATTRIBUTES[owner], path)
    if fields == ("body",) and owner == "log" and path.keys:
        return _body(path)
    getter = _FIELDS[owner].get(fields)
    if getter is not None and path.keys:
        raise OttlSyntaxError(f"path {path.text()}: only attributes take an index here", path.offset)
    if getter is None:
        hint = _REFUSED.get(fields[0]) if len(fields) == 1 else None
        known = ", ".join(sorted(".".join(key) for key in _FIELDS[owner]) + ["attributes"] * (owner in _ATTRIBUTES))
        reason = hint or f"supported in {owner}: {known}"
        raise OttlSyntaxError(f"path {path.text()} is not supported in a {context} condition; {reason}", path.offset)
    return getter


def _attributes(of: Callable[[Context], Any], path: ast.Path) -> Getter:
    keys = path.keys
    if not keys:
        return lambda ctx: {kv.key: plain(kv.value) for kv in reversed(of(ctx))}  # the first of a key wins
    first, rest = keys[0], keys[1:]
    if not isinstance(first, str):
        raise OttlSyntaxError(f"path {path.text()}: attributes take a string key first", path.offset)

    def get(ctx: Context) -> Any:
        for kv in of(ctx):
            if kv.key == first:
                value = plain(kv.value)
                return _index(value, rest) if rest else value
        return None
    return get


def _body(path: ast.Path) -> Getter:
    """`body[...]`: indexes into a map or slice body; any other body cannot be indexed."""
    keys = path.keys

    def get(ctx: Context) -> Any:
        body = plain(ctx.record.body)
        if not isinstance(body, (dict, list)):
            raise OttlEvalError(f"log bodies of type {type(body).__name__} cannot be indexed")
        return _index(body, keys)
    return get


def _index(value: Any, keys: tuple[str | int, ...]) -> Any:
    """Nested keys into maps and slices, as OTTL's getIndexableValue: a missing map key is nil;
    an index out of range or into a scalar is an error."""
    for key in keys:
        if isinstance(value, dict):
            if not isinstance(key, str):
                raise OttlEvalError(f"a map needs a string key, not {key}")
            if key not in value:
                return None
            value = value[key]
        elif isinstance(value, list):
            if not isinstance(key, int):
                raise OttlEvalError(f"a slice needs an integer index, not {key!r}")
            if not 0 <= key < len(value):
                raise OttlEvalError(f"index {key} out of bounds")
            value = value[key]
        else:
            raise OttlEvalError(f"type {type(value).__name__} does not support indexing")
    return value
