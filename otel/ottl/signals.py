"""Paths of OTTL's log, metric and datapoint contexts (pkg/ottl's ctxlog, ctxmetric, ctxdatapoint):
the fields each reads and the enum symbols each knows, beside the span ones in `paths`.

Values are what otelcol's getters return: integers for numbers, times and enums; nil where a
field does not exist for the item's kind (`value_double` of a histogram point, `count` of a
gauge point, `aggregation_temporality` of a gauge, `is_monotonic` of anything but a sum). A
number point's `value_double` is 0 when it holds an int and `value_int` 0 when it holds a
double, as pdata's. `body` is the log body as a value (a map or slice takes indexes);
`body.string` is its text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel.ottl.values import plain, string_like

Getter = Callable[[Any], Any]  # over paths.Context

SEVERITY_ENUMS = {"SEVERITY_NUMBER_UNSPECIFIED": 0, **{
    f"SEVERITY_NUMBER_{base}{step if step > 1 else ''}": first + step - 1
    for base, first in (("TRACE", 1), ("DEBUG", 5), ("INFO", 9), ("WARN", 13), ("ERROR", 17), ("FATAL", 21))
    for step in (1, 2, 3, 4)}}
METRIC_ENUMS = {"AGGREGATION_TEMPORALITY_UNSPECIFIED": 0, "AGGREGATION_TEMPORALITY_DELTA": 1,
                "AGGREGATION_TEMPORALITY_CUMULATIVE": 2, "METRIC_DATA_TYPE_NONE": 0, "METRIC_DATA_TYPE_GAUGE": 1,
                "METRIC_DATA_TYPE_SUM": 2, "METRIC_DATA_TYPE_HISTOGRAM": 3,
                "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM": 4, "METRIC_DATA_TYPE_SUMMARY": 5}
DATAPOINT_ENUMS = {"FLAG_NONE": 0, "FLAG_NO_RECORDED_VALUE": 1, **METRIC_ENUMS}

_TYPES = {None: 0, "gauge": 1, "sum": 2, "histogram": 3, "exponential_histogram": 4, "summary": 5}
_NUMBER_KINDS = ("gauge", "sum")
_TEMPORAL_KINDS = ("sum", "histogram", "exponential_histogram")


def _hex(width: int, field: Callable[[Any], bytes]) -> Getter:
    zeros = "0" * width
    return lambda ctx: field(ctx).hex() or zeros


def _body_text(ctx: Any) -> str:
    value = plain(ctx.record.body)
    return "" if value is None else string_like(value)


LOG_FIELDS: dict[tuple[str, ...], Getter] = {
    ("body",): lambda ctx: plain(ctx.record.body),
    ("body", "string"): _body_text,
    ("event_name",): lambda ctx: ctx.record.event_name,
    ("trace_id", "string"): _hex(32, lambda ctx: ctx.record.trace_id),
    ("span_id", "string"): _hex(16, lambda ctx: ctx.record.span_id),
    ("time_unix_nano",): lambda ctx: ctx.record.time_unix_nano,
    ("observed_time_unix_nano",): lambda ctx: ctx.record.observed_time_unix_nano,
    ("severity_number",): lambda ctx: ctx.record.severity_number,
    ("severity_text",): lambda ctx: ctx.record.severity_text,
    ("dropped_attributes_count",): lambda ctx: ctx.record.dropped_attributes_count,
    ("flags",): lambda ctx: ctx.record.flags,
}


def _kind(metric: Any) -> str | None:
    kind: str | None = metric.WhichOneof("data")
    return kind


def _temporality(ctx: Any) -> int | None:
    kind = _kind(ctx.metric)
    return getattr(ctx.metric, kind).aggregation_temporality if kind in _TEMPORAL_KINDS else None


METRIC_FIELDS: dict[tuple[str, ...], Getter] = {
    ("name",): lambda ctx: ctx.metric.name,
    ("description",): lambda ctx: ctx.metric.description,
    ("unit",): lambda ctx: ctx.metric.unit,
    ("type",): lambda ctx: _TYPES[_kind(ctx.metric)],
    ("aggregation_temporality",): _temporality,
    ("is_monotonic",): lambda ctx: ctx.metric.sum.is_monotonic if _kind(ctx.metric) == "sum" else None,
}


def _number(field: str) -> Getter:
    return lambda ctx: getattr(ctx.point, field) if _kind(ctx.metric) in _NUMBER_KINDS else None


def _distribution(field: str, kinds: tuple[str, ...]) -> Getter:
    return lambda ctx: getattr(ctx.point, field) if _kind(ctx.metric) in kinds else None


_DISTRIBUTIONS = ("histogram", "exponential_histogram", "summary")
DATAPOINT_FIELDS: dict[tuple[str, ...], Getter] = {
    ("start_time_unix_nano",): lambda ctx: ctx.point.start_time_unix_nano,
    ("time_unix_nano",): lambda ctx: ctx.point.time_unix_nano,
    ("value_double",): _number("as_double"),
    ("value_int",): _number("as_int"),
    ("flags",): lambda ctx: ctx.point.flags,
    ("count",): _distribution("count", _DISTRIBUTIONS),
    ("sum",): _distribution("sum", _DISTRIBUTIONS),
    ("scale",): _distribution("scale", ("exponential_histogram",)),
    ("zero_count",): _distribution("zero_count", ("exponential_histogram",)),
}
