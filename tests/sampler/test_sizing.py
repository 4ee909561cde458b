"""A trace's size as otelcol 0.165 counts it toward maximum_trace_size_bytes: pdata's
ResourceSpansSize of the ResourceSpans it cuts per trace, figures worked out from pdata's sizer
(generated_proto_*.go: SizeProto) field by field in each test."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from otel.wire import length_delimited, varint
from sampler.sizing import all_values_set, span_size, trace_sizes, traces_size

ONE, TWO = b"\x01" * 16, b"\x02" * 16


def root_request() -> ExportTraceServiceRequest:
    """No resource, no scope, a root span without status: every field pdata writes though empty."""
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(trace_id=ONE, span_id=b"\x01" * 8, name="a")
    return request


def child_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    group = request.resource_spans.add()
    group.resource.attributes.add(key="service.name").value.string_value = "svc"
    scope = group.scope_spans.add()
    scope.scope.name = "lib"
    span = scope.spans.add(trace_id=ONE, span_id=b"\x02" * 8, parent_span_id=b"\x01" * 8, name="b")
    span.status.code = Status.STATUS_CODE_ERROR
    span.attributes.add(key="k")  # no value
    return request


def test_fields_pdata_writes_though_empty_are_counted_and_the_framing_of_the_group_is_not():
    # span: trace_id 18 + span_id 10 + name 3, and an empty parent_span_id 2 and status 2: 35;
    # scope: an empty scope 2 + the span 1+1+35: 39; resource spans: an empty resource 2 + the scope 1+1+39: 43
    request = root_request()
    assert span_size(request.resource_spans[0].scope_spans[0].spans[0]) == 35
    assert trace_sizes(request) == {ONE: 43}
    assert len(request.SerializeToString()) == 37  # what protobuf writes, framing included: not what otelcol counts


def test_a_key_value_without_value_counts_an_empty_value_and_the_resource_and_scope_their_own_bytes():
    # span: 18 + 10 + parent 10 + name 3 + attribute k (key 3, empty value 2: 1+1+5) 7 + status (code 2) 4: 52;
    # scope: name "lib" 1+1+5 + the span 1+1+52: 61; resource: service.name=svc (key 14, value 7: 1+1+21) 23;
    # resource spans: 1+1+23 + 1+1+61: 88
    request = child_request()
    assert span_size(request.resource_spans[0].scope_spans[0].spans[0]) == 52
    assert trace_sizes(request) == {ONE: 88}


def test_each_resource_spans_of_a_request_is_cut_per_trace_and_sized_on_its_own():
    request = root_request()
    request.MergeFrom(child_request())  # two resource spans, each of trace ONE
    group = request.resource_spans[1]
    group.scope_spans[0].spans.add(trace_id=TWO, span_id=b"\x03" * 8, parent_span_id=b"\x01" * 8, name="c",
                                   status={"code": Status.STATUS_CODE_OK})
    # trace TWO's cut: the resource 1+1+23, the scope "lib" 7 and its span (18 + 10 + 10 + 3 + status 4 = 45)
    assert trace_sizes(request) == {ONE: 43 + 88, TWO: 25 + 1 + 1 + 7 + 1 + 1 + 45}


def test_a_length_that_needs_a_second_byte_once_pdata_adds_its_bytes_is_counted_so():
    request = root_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.name = "a" * 94  # 31 + 93 = 124 bytes in protobuf, 128 in pdata: a length of two bytes
    assert span_size(span) == 128
    # scope: 2 + 1+2+128 = 133; resource spans: 2 + 1+2+133 = 138
    assert trace_sizes(request) == {ONE: 138}


def test_values_nested_in_maps_and_lists_count_their_empty_values_at_every_depth():
    request = root_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    inner = span.attributes.add(key="m").value.kvlist_value.values.add(key="x")  # no value
    listed = span.attributes.add(key="l").value.array_value.values.add().kvlist_value.values.add(key="y")
    assert not inner.HasField("value") and not listed.HasField("value")
    # each "x"/"y" pair 3 -> 5 bytes: the pairs, the maps, the values, the attributes each one byte longer
    # in their field by 2; 35 in pdata without attributes; m: key 3 + value (map (pair 1+1+5) 1+1+7) 1+1+9: 14
    # -> attribute 1+1+14 = 16; l: key 3 + value (list (value (map 1+1+7) 1+1+9) 1+1+11) 1+1+13: 18 -> 20
    assert span_size(span) == 35 + 16 + 20


def test_bytes_limiting_sizes_the_cut_otelcol_makes_leaving_out_scopes_and_resources_without_spans():
    """A request of one trace is buffered as it came; otelcol cuts it first, which drops what holds no span."""
    request = root_request()
    request.resource_spans[0].scope_spans.add(scope={"name": "idle"})
    request.resource_spans.add().resource.attributes.add(key="idle")
    assert traces_size(request.resource_spans) == 1 + 1 + 43  # the root's resource spans alone, with its framing
    assert traces_size(child_request().resource_spans) == 1 + 1 + 88


def test_the_request_bytes_spare_the_walk_over_attributes_only_when_every_key_value_holds_a_value():
    nested = root_request()
    span = nested.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="m").value.kvlist_value.values.add(key="x")  # no value, one level down
    complete = child_request()
    complete.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.int_value = 7
    for request, complete_values in ((root_request(), True), (child_request(), False), (nested, False),
                                     (complete, True)):
        raw = request.SerializeToString()
        assert all_values_set(raw) is complete_values
        assert trace_sizes(request, raw) == trace_sizes(request)
        assert traces_size(request.resource_spans, [raw]) == traces_size(request.resource_spans)
    assert all_values_set(b"\x0a\x05\x0a") is False  # bytes that do not parse: walk


def _with_unknown_fields(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """A copy with a field no OTLP version defines in every message pdata sizes: the span, its
    status, event, link, attributes and their values (nested too), the resource and the scope."""
    unknown = length_delimited(99, b"x" * 20) + varint(99 << 3) + varint(7)
    request = ExportTraceServiceRequest.FromString(request.SerializeToString())
    group = request.resource_spans[0]
    scope = group.scope_spans[0]
    span = scope.spans[0]
    pair = span.attributes.add(key="k")
    pair.value.kvlist_value.values.add(key="n").value.string_value = "v"
    link = span.links.add(trace_id=TWO, span_id=b"\x02" * 8)
    event = span.events.add(name="e")
    for message in (group.resource, scope.scope, span, span.status, pair, pair.value, pair.value.kvlist_value,
                    pair.value.kvlist_value.values[0], pair.value.kvlist_value.values[0].value, link, event):
        message.MergeFromString(unknown)
    return request


def test_unknown_fields_count_nothing_toward_the_size_as_pdata_drops_them_before_sizing():
    """otelcol unmarshals into pdata, which skips fields it does not know, then sizes; here
    protobuf kept them and ByteSize counted them, so a trace from a newer SDK could pass
    maximum_trace_size_bytes or a bytes_limiting bucket sooner than in otelcol."""
    for base in (root_request(), child_request()):
        request = _with_unknown_fields(base)
        known = ExportTraceServiceRequest.FromString(request.SerializeToString())
        known.DiscardUnknownFields()
        assert len(request.SerializeToString()) > len(known.SerializeToString())
        raw = request.SerializeToString()
        expected = trace_sizes(known)
        assert trace_sizes(request) == expected
        assert trace_sizes(request, raw) == expected
        assert traces_size(request.resource_spans) == traces_size(known.resource_spans)
        assert traces_size(request.resource_spans, [raw]) == traces_size(known.resource_spans)
        assert len(request.SerializeToString()) == len(raw)  # the caller's message is left as it came
