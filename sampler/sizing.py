"""A trace's size as otelcol 0.165 counts it toward `maximum_trace_size_bytes`, and as the
`bytes_limiting` policy spends it.

otelcol cuts each ResourceSpans it receives into one per trace (splitResourceSpansByTrace: the
resource and its schema url, and per scope holding the trace's spans, the scope, its schema url
and those spans) and adds `ptrace.ProtoMarshaler.ResourceSpansSize` of each to the trace's size:
the message's bytes without the key and length that frame it in a request.

pdata's sizer is not protobuf's: it always writes some fields protobuf leaves out when empty or
unset, two bytes each (a key, a length of 0), and what holds them grows, its length too:
  * a ResourceSpans' resource, a ScopeSpans' scope, a KeyValue's value;
  * a span's trace_id, span_id, parent_span_id (a root span has none) and status;
  * a link's trace_id and span_id.
bytes_limiting spends ptrace's TracesSize of the trace's batches: each batch's size with its key
and length. Everything else pdata sizes as protobuf does, so a size here is protobuf's (ByteSize,
computed in C) plus those bytes, found by a walk over the spans and attributes: run only when a
limit is set, as otelcol sizes only then.

pdata's unmarshal skips the fields it does not know (a newer OTLP's, a vendor's), at any depth,
and protobuf keeps them, and counts them: so what is sized is a copy without them (DiscardUnknownFields,
in C, over the whole message: about what the loop over spans saves by not iterating their empty
`links`). The caller's message keeps them.

The walk over attributes costs most (a span's ids and status are a few calls), and a key-value
without a value is rare: given the request's bytes, a parse with a schema of its own
(`_PRESENCE`: every value required, every other field left unparsed) tells in C whether any
key-value lacks its value, and only then are the attributes walked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

_EMPTY = 2  # a field pdata writes though empty: its key and a length of 0
M = TypeVar("M", bound=Message)


def _presence_schema() -> type[Message]:
    """A traces request in which a key-value's value is required (proto2) and nothing but what
    leads to key-values is declared: IsInitialized() is False when some key-value lacks its value."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="edgeagent/sampler/presence.proto", syntax="proto2",
                                              package="edgeagent.sampler.presence")
    many, one, required = field.LABEL_REPEATED, field.LABEL_OPTIONAL, field.LABEL_REQUIRED
    for name, fields in (
            ("Request", [("resource_spans", 1, "ResourceSpans", many)]),
            ("ResourceSpans", [("resource", 1, "Resource", one), ("scope_spans", 2, "ScopeSpans", many)]),
            ("Resource", [("attributes", 1, "KeyValue", many)]),
            ("ScopeSpans", [("scope", 1, "Scope", one), ("spans", 2, "Span", many)]),
            ("Scope", [("attributes", 3, "KeyValue", many)]),
            ("Span", [("attributes", 9, "KeyValue", many), ("events", 11, "Event", many),
                      ("links", 13, "Link", many)]),
            ("Event", [("attributes", 3, "KeyValue", many)]),
            ("Link", [("attributes", 4, "KeyValue", many)]),
            ("KeyValue", [("value", 2, "AnyValue", required)]),
            ("AnyValue", [("array_value", 5, "ArrayValue", one), ("kvlist_value", 6, "KeyValueList", one)]),
            ("ArrayValue", [("values", 1, "AnyValue", many)]),
            ("KeyValueList", [("values", 1, "KeyValue", many)])):
        message = file.message_type.add(name=name)
        for field_name, number, kind, label in fields:
            message.field.add(name=field_name, number=number, label=label, type=field.TYPE_MESSAGE,
                              type_name=f".{file.package}.{kind}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{file.package}.Request"))


_PRESENCE = _presence_schema()


def _sov(value: int) -> int:
    """Bytes of a varint (proto.Sov)."""
    return (value.bit_length() + 6) // 7 or 1


def _field(size: int) -> int:
    """Bytes of a length-delimited field of a one-byte key holding `size` bytes."""
    return 1 + _sov(size) + size


def _grown(size: int, extra: int) -> int:
    """How many bytes a length-delimited field holding `size` bytes grows by when they grow by `extra`."""
    return extra + _sov(size + extra) - _sov(size) if extra else 0


def _value_extra(value: AnyValue) -> int:
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return _grown(value.kvlist_value.ByteSize(), _attributes_extra(value.kvlist_value.values))
    if kind == "array_value":
        array = value.array_value
        return _grown(array.ByteSize(), sum(_grown(item.ByteSize(), _value_extra(item)) for item in array.values))
    return 0


def _attributes_extra(attributes: Iterable[KeyValue]) -> int:
    """What pdata adds to a repeated KeyValue field: a value left unset, at any depth."""
    extra = 0
    for pair in attributes:
        if pair.HasField("value"):
            grows = _value_extra(pair.value)
            if grows:
                extra += _grown(pair.ByteSize(), _grown(pair.value.ByteSize(), grows))
        else:
            extra += _grown(pair.ByteSize(), _EMPTY)
    return extra


def span_size(span: Span, values: bool = True, trace_id: bytes | None = None) -> int:
    """ptrace's size of the span (without its key and length), when it holds no unknown field
    (known_fields). `values`: whether a key-value in it may lack its value (False: none does, its
    attributes need no walk). `trace_id`: the span's, when the caller has read it already."""
    if trace_id is None:
        trace_id = span.trace_id
    extra = ((not trace_id) + (not span.span_id) + (not span.parent_span_id)
             + (not span.HasField("status"))) * _EMPTY
    if values:
        extra += _attributes_extra(span.attributes)
        for event in span.events:
            extra += _grown(event.ByteSize(), _attributes_extra(event.attributes))
    links = span.links
    if links:  # iterating an empty repeated field costs more than all the rest of a span's extra
        for link in links:
            extra += _grown(link.ByteSize(), ((not link.trace_id) + (not link.span_id)) * _EMPTY
                            + (_attributes_extra(link.attributes) if values else 0))
    return span.ByteSize() + extra


def _string(text: str) -> int:
    return _field(len(text.encode())) if text else 0


def _group_head(group: ResourceSpans, values: bool = True) -> int:
    """The resource (always written) and schema url of a ResourceSpans, as fields."""
    resource = group.resource
    extra = _attributes_extra(resource.attributes) if values else 0
    return _field(resource.ByteSize() + extra) + _string(group.schema_url)


def _scope_head(scope: ScopeSpans, values: bool = True) -> int:
    """The scope (always written) and schema url of a ScopeSpans, as fields."""
    header = scope.scope
    extra = _attributes_extra(header.attributes) if values else 0
    return _field(header.ByteSize() + extra) + _string(scope.schema_url)


def resource_spans_size(group: ResourceSpans, values: bool = True) -> int:
    """ptrace's ResourceSpansSize (without its key and length) of the ResourceSpans otelcol cuts
    for a trace out of `group`, whose spans are all the trace's: its scopes without spans left
    out (a request of one trace is buffered as it came, empty scopes included). `values`: as
    span_size's."""
    total = _group_head(group, values)
    for scope in group.scope_spans:
        spans = 0
        for span in scope.spans:
            if values or span.links:
                size = span_size(span, values)
            else:  # as in trace_sizes, span_size's of the usual span inline
                size = span.ByteSize() + ((not span.trace_id) + (not span.span_id) + (not span.parent_span_id)
                                          + (not span.HasField("status"))) * _EMPTY
            spans += 1 + (size.bit_length() + 6) // 7 + size  # _field(size), inline: this runs per span
        if spans:
            total += _field(_scope_head(scope, values) + spans)
    return total


def known_fields(message: M, raw: bytes | None = None) -> M:
    """A copy of the message as pdata holds it: without the fields it does not know, at any depth.
    `raw`: the message serialized, when at hand (parsing it costs less than copying the message)."""
    if raw is None:
        copy = type(message)()
        copy.CopyFrom(message)
    else:
        copy = type(message).FromString(raw)
    copy.DiscardUnknownFields()
    return copy


def traces_size(groups: Iterable[ResourceSpans], raw: Sequence[bytes] = ()) -> int:
    """ptrace's TracesSize of the ResourceSpans otelcol cuts for a trace out of these (those
    without spans are none). `raw`: the serialized requests they were parsed from, when at hand
    (they may spare the walk over attributes, as in trace_sizes)."""
    values = not raw or not all(map(all_values_set, raw))
    return sum(_field(resource_spans_size(known_fields(group), values)) for group in groups
               if any(scope.spans for scope in group.scope_spans))


def all_values_set(raw: bytes) -> bool:
    """Whether every key-value in the serialized traces request holds a value (False when unsure)."""
    try:
        return _PRESENCE.FromString(raw).IsInitialized()
    except DecodeError:
        return False


def trace_sizes(request: ExportTraceServiceRequest, raw: bytes | None = None) -> dict[bytes, int]:
    """By trace id, what otelcol adds to each trace's size for this request: the sum of
    ResourceSpansSize of the ResourceSpans it cuts for the trace out of each of the request's.
    `raw`: the request's bytes, when at hand (they may spare the walk over attributes)."""
    values = raw is None or not all_values_set(raw)
    sizes: dict[bytes, int] = {}
    for group in known_fields(request, raw).resource_spans:
        head = -1  # sized once the group holds a span
        in_group: dict[bytes, int] = {}
        for scope in group.scope_spans:
            in_scope: dict[bytes, int] = {}
            for span in scope.spans:
                trace_id = span.trace_id
                if values or span.links:
                    size = span_size(span, values, trace_id)
                else:  # span_size's of the usual span, inline (the call costs a tenth of it): ids and status
                    size = span.ByteSize() + ((not trace_id) + (not span.span_id) + (not span.parent_span_id)
                                              + (not span.HasField("status"))) * _EMPTY
                in_scope[trace_id] = in_scope.get(trace_id, 0) + 1 + (size.bit_length() + 6) // 7 + size  # size > 0
            if not in_scope:
                continue
            if head < 0:
                head = _group_head(group, values)
            scope_head = _scope_head(scope, values)
            for trace_id, spans in in_scope.items():
                in_group[trace_id] = in_group.get(trace_id, head) + _field(scope_head + spans)
        for trace_id, size in in_group.items():
            sizes[trace_id] = sizes.get(trace_id, 0) + size
    return sizes
