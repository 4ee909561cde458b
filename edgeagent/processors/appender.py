"""Append serialized attributes to every record of a serialized request, without decoding the records.

The common edge case, "upsert a few constant attributes on everything" with none of the keys in
the request, needs no look at the records. Parsing a request into the real message classes,
merging and serializing it again costs most of an ingest's CPU, so the request is parsed into
*shadow* classes instead. They know only the path from the request down to the records:
resource group, scope, record (for metrics: metric, data kind, data point). Everything else,
every field of the records included, stays an unknown field, which protobuf keeps as raw bytes
and writes back verbatim. Merging a serialized record that holds only the new attributes into
each shadow record appends them (protobuf appends repeated fields on merge), and serializing
the shadow request is mostly a copy. That is 4 to 5 times less CPU than the real classes.

Known fields are written before unknown ones, so field order inside the path's messages
changes; protobuf parsers accept fields in any order. The request must already have been
parsed once into its real class (that is the validation): the shadow classes accept more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    NumberDataPoint,
    SummaryDataPoint,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from edgeagent.signals import Signal

# The data kinds of Metric (its `data` oneof): field number, name and data point class.
_METRIC_KINDS = (
    (5, "gauge", NumberDataPoint),
    (7, "sum", NumberDataPoint),
    (9, "histogram", HistogramDataPoint),
    (10, "exponential_histogram", ExponentialHistogramDataPoint),
    (11, "summary", SummaryDataPoint),
)


def _shadow_classes() -> dict[str, Any]:
    """Build the shadow message classes in a private descriptor pool."""
    file = descriptor_pb2.FileDescriptorProto(name="edgeagent/shadow.proto", package="edgeagent.shadow",
                                              syntax="proto3")

    def message(name: str, *fields: tuple[str, int, str]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, type_name in fields:
            proto.field.add(name=field_name, number=number, type_name=f".edgeagent.shadow.{type_name}",
                            type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                            label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)

    # ExportTraceServiceRequest.resource_spans = 1, ResourceSpans.scope_spans = 2, ScopeSpans.spans = 2;
    # the logs and metrics requests number their paths the same way.
    message("Record")
    message("Scope", ("records", 2, "Record"))
    message("Group", ("scopes", 2, "Scope"))
    message("Request", ("groups", 1, "Group"))
    message("Points", ("points", 1, "Record"))
    message("Metric", *((name, number, "Points") for number, name, _ in _METRIC_KINDS))
    message("MetricScope", ("metrics", 2, "Metric"))
    message("MetricGroup", ("scopes", 2, "MetricScope"))
    message("MetricRequest", ("groups", 1, "MetricGroup"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"edgeagent.shadow.{name}"))
            for name in ("Request", "MetricRequest")}


_SHADOW = _shadow_classes()
_RECORD_CLASS = {Signal.TRACES: Span, Signal.LOGS: LogRecord}


def append_to_every_record(signal: Signal, raw: bytes, template: Callable[[type], bytes]) -> bytes:
    """`raw` with `template(record_class)` merged into each span, log record or data point."""
    if signal is Signal.METRICS:
        request = _SHADOW["MetricRequest"].FromString(raw)
        for group in request.groups:
            for scope in group.scopes:
                for metric in scope.metrics:
                    for _, kind, point_class in _METRIC_KINDS:
                        for data in getattr(metric, kind):  # repeated in the shadow: absent is empty
                            added = template(point_class)
                            for point in data.points:
                                point.MergeFromString(added)
        return request.SerializeToString()
    request = _SHADOW["Request"].FromString(raw)
    added = template(_RECORD_CLASS[signal])
    for group in request.groups:
        for scope in group.scopes:
            for record in scope.records:
                record.MergeFromString(added)
    return request.SerializeToString()
