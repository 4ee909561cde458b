"""Add serialized attributes to every record of a serialized request, without decoding the records.

The common edge case, "upsert a few constant attributes on everything" with none of the keys in
the request, needs no look at the records. Parsing a request into the real message classes,
merging and serializing it again costs most of an ingest's CPU, so the request is parsed into
*shadow* classes instead. They know only the path from the request down to the records:
resource group, scope, record (for metrics: metric, data kind, data point). The records
themselves are plain `bytes` fields, and everything else stays an unknown field, which
protobuf keeps as raw bytes and writes back verbatim. Appending a serialized record that holds
only the new attributes to each record's bytes adds them (a message's fields may come in any
order, and repeated fields append), and serializing the shadow request is mostly a copy.
For 512 spans that is 0.2 ms, against 1.1 ms to merge and serialize with the real classes.

Known fields are written before unknown ones, so field order inside the path's messages
changes; protobuf parsers accept fields in any order. The request must already have been
parsed once into its real class (that is the validation): the shadow classes accept more.

Even this is deferred where it can be: the attributes processor hands the attributes to the
payload (Payload.defer_attributes), and they are added only when something looks at the
request, or when a queue record is read (queue/record.py). An edge agent whose upstream is
down then never pays for it at ingest.
"""

from __future__ import annotations

import functools
from typing import Any

from otel.shape import LOGS, METRICS, TRACES, Shape

# The data kinds of Metric (its `data` oneof): field number, name and data point class (_record_classes).
_METRIC_KINDS = (
    (5, "gauge", "NumberDataPoint"),
    (7, "sum", "NumberDataPoint"),
    (9, "histogram", "HistogramDataPoint"),
    (10, "exponential_histogram", "ExponentialHistogramDataPoint"),
    (11, "summary", "SummaryDataPoint"),
)
_RECORD_CLASS = {TRACES: "Span", LOGS: "LogRecord"}


@functools.cache
def _record_classes() -> dict[str, Any]:
    """The real record classes and KeyValueList, by name, imported when first needed: the OTLP message modules, with
    protobuf's runtime, are a tenth of the agent's start-up, and an agent adding no attributes never
    needs them here."""
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    points = {name: getattr(metrics_pb2, name) for _, _, name in _METRIC_KINDS}
    return {"Span": trace_pb2.Span, "LogRecord": logs_pb2.LogRecord, "KeyValueList": common_pb2.KeyValueList, **points}


@functools.cache
def _shadow_classes() -> dict[str, Any]:
    """Build the shadow message classes in a private descriptor pool, when first needed: descriptor.proto's
    own classes, which describe them, take 0.6 MiB that an agent adding no attributes never uses."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(name="edgeagent/shadow.proto", package="edgeagent.shadow",
                                              syntax="proto3")

    def message(name: str, *fields: tuple[str, int, str]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, type_name in fields:
            field = proto.field.add(name=field_name, number=number,
                                    label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
            if type_name == "bytes":
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            else:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = f".edgeagent.shadow.{type_name}"

    # ExportTraceServiceRequest.resource_spans = 1, ResourceSpans.scope_spans = 2, ScopeSpans.spans = 2;
    # the logs and metrics requests number their paths the same way.
    message("Scope", ("records", 2, "bytes"))
    message("Group", ("scopes", 2, "Scope"))
    message("Request", ("groups", 1, "Group"))
    message("Points", ("points", 1, "bytes"))
    message("Metric", *((name, number, "Points") for number, name, _ in _METRIC_KINDS))
    message("MetricScope", ("metrics", 2, "Metric"))
    message("MetricGroup", ("scopes", 2, "MetricScope"))
    message("MetricRequest", ("groups", 1, "MetricGroup"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"edgeagent.shadow.{name}"))
            for name in ("Request", "MetricRequest")}


def append_attributes(shape: Shape, raw: bytes, attributes: bytes) -> bytes:
    """`raw` (a request of the signal `shape` describes) with the serialized KeyValueList `attributes`
    added to every span, log record or data point."""
    if shape is METRICS:
        request = _shadow_classes()["MetricRequest"].FromString(raw)
        for group in request.groups:
            for scope in group.scopes:
                for metric in scope.metrics:
                    for _, kind, point_class in _METRIC_KINDS:
                        for data in getattr(metric, kind):  # repeated in the shadow: absent is empty
                            _append(data.points, _template(attributes, point_class))
        return request.SerializeToString()
    request = _shadow_classes()["Request"].FromString(raw)
    added = _template(attributes, _RECORD_CLASS[shape])
    for group in request.groups:
        for scope in group.scopes:
            _append(scope.records, added)
    return request.SerializeToString()


@functools.lru_cache(maxsize=64)
def _template(attributes: bytes, record_class: str) -> bytes:
    """A serialized record of this class (by name) that holds only `attributes` (a serialized KeyValueList)."""
    classes = _record_classes()
    record = classes[record_class]()
    record.attributes.extend(classes["KeyValueList"].FromString(attributes).values)
    return record.SerializeToString()


def _append(records: Any, added: bytes) -> None:
    records[:] = [record + added for record in records]
