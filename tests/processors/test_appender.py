"""The byte-level append of constant attributes gives what the real message classes give, also when
it is deferred until someone looks at the request."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.processors.actions import to_any_value
from edgeagent.processors.attributes import AttributesConfig, AttributesProcessor, _key_scan, records
from edgeagent.processors.filter import FilterConfig, FilterProcessor
from edgeagent.signals import Payload, Signal
from tests.processors.tables import fill, log_request, metric_request, span_attrs, span_request

ACTIONS = [{"key": "tenant", "value": "acme", "action": "upsert"},
           {"key": "site", "value": 7, "action": "insert"},
           {"key": "ratio", "value": 0.5, "action": "upsert"}]
ADDED = [("tenant", "acme"), ("site", 7), ("ratio", 0.5)]
KINDS = ["gauge", "sum", "histogram", "summary", "exponential_histogram"]


def rich_request(signal: Signal):
    """Two resources with two scopes each, records with every kind of field set."""
    if signal is Signal.TRACES:
        request = span_request([{"attrs": [("a", 1)], "name": "GET /"}, {"attrs": []}], resource=[("r", "1")])
        for span in request.resource_spans[0].scope_spans[0].spans:
            span.trace_id, span.span_id, span.end_time_unix_nano = b"t" * 16, b"s" * 8, 12345
            span.events.add(name="e").attributes.add(key="ek").value.int_value = 1
            span.links.add(trace_id=b"l" * 16)
            span.status.code = 2
        request.resource_spans[0].schema_url = "https://schema/1"
        request.resource_spans[0].scope_spans.add().spans.add(name="second scope")
        request.resource_spans.add().MergeFrom(span_request([{"attrs": [("b", True)]}], resource=[("r", "2")])
                                               .resource_spans[0])
    elif signal is Signal.LOGS:
        request = log_request([{"attrs": [("a", 1)], "body": "hello", "severity": 9}, {"body": {"k": [1, 2]}}])
        request.resource_logs[0].scope_logs.add().log_records.add(severity_text="WARN")
        request.resource_logs.add().MergeFrom(log_request([{}], resource=[("r", "2")]).resource_logs[0])
    else:
        request = metric_request([{"name": kind, "kind": kind, "points": [[("a", 1)], []]} for kind in KINDS])
        for metric in request.resource_metrics[0].scope_metrics[0].metrics:
            metric.description, metric.unit = "d", "ms"
            fill(metric.metadata, [("m", "x")])
        request.resource_metrics[0].scope_metrics.add().metrics.add(name="no data")
        request.resource_metrics.add().MergeFrom(metric_request([{"name": "g"}]).resource_metrics[0])
    return request


def expected_after_append(signal: Signal, request):
    expected = type(request)()
    expected.CopyFrom(request)
    for record in records(signal, expected):
        for key, value in ADDED:
            record.attributes.add(key=key).value.CopyFrom(to_any_value(value))
    return expected


@pytest.mark.parametrize("signal", list(Signal), ids=lambda s: s.label)
def test_byte_level_append_equals_appending_on_the_messages(signal):
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": ACTIONS}))
    request = rich_request(signal)
    payload = Payload.from_bytes(signal, request.SerializeToString())
    processor.process(payload)
    assert payload.message is None and payload.deferred, "the byte-level path did not run"
    assert signal.request_class.FromString(payload.serialized()) == expected_after_append(signal, request)


def test_unknown_fields_of_records_travel_unchanged():
    # a newer client may send fields this build does not know; they must reach the upstream
    request = span_request([{"attrs": [("a", 1)]}])
    spans = request.resource_spans[0].scope_spans[0].spans
    unknown = b"\xa8\x06\x2a"  # field 101, varint 42
    with_unknown = type(spans[0]).FromString(spans[0].SerializeToString() + unknown)
    del spans[:]
    spans.append(with_unknown)
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": ACTIONS}))
    payload = Payload.from_bytes(Signal.TRACES, request.SerializeToString())
    processor.process(payload)
    assert payload.message is None, "the byte-level path did not run"
    assert unknown in payload.serialized()
    span = ExportTraceServiceRequest.FromString(payload.serialized()).resource_spans[0].scope_spans[0].spans[0]
    assert [kv.key for kv in span.attributes] == ["a", "tenant", "site", "ratio"]


SHARED_PREFIX = [{"key": "telemetryflow.workspace.id", "value": "w", "action": "upsert"},
                 {"key": "telemetryflow.tenant.id", "value": "t", "action": "upsert"},
                 {"key": "edge.location", "value": "x", "action": "upsert"}]


@pytest.mark.parametrize("attrs, byte_level", [
    ([("http.method", "GET")], True),
    ([("telemetryflow.agent", "1")], True),  # the shared prefix occurs, none of the keys does
    ([("telemetryflow.tenant.id", "old")], False),
    ([("edge.location", "old")], False),
    ([("note", "set by telemetryflow.workspace.id")], False),  # a key in a value is enough to look closer
], ids=["no key", "prefix only", "grouped key", "single key", "key in a value"])
def test_keys_in_the_request_turn_the_byte_level_path_off(attrs, byte_level):
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": SHARED_PREFIX}))
    payload = Payload.from_bytes(Signal.TRACES, span_request([{"attrs": attrs}]).SerializeToString())
    processor.process(payload)
    assert (payload.message is None) is byte_level
    span = ExportTraceServiceRequest.FromString(payload.serialized()).resource_spans[0].scope_spans[0].spans[0]
    values = {kv.key: kv.value.string_value for kv in span.attributes}
    assert len(values) == len(span.attributes), "a key was added twice"
    upserted = {"telemetryflow.workspace.id": "w", "telemetryflow.tenant.id": "t", "edge.location": "x"}
    assert {key: values.get(key) for key in upserted} == upserted


def test_keys_with_a_long_shared_prefix_are_searched_once():
    keys = [b"telemetryflow.workspace.id", b"telemetryflow.tenant.id", b"edge.location", b"env"]
    assert _key_scan(keys) == [(b"edge.location", [b"edge.location"]), (b"env", [b"env"]),
                               (b"telemetryflow.", [b"telemetryflow.tenant.id", b"telemetryflow.workspace.id"])]


def _attributes_processor(actions):
    return AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": actions}))


def test_the_byte_level_path_defers_the_attributes_and_leaves_the_request_as_received():
    body = span_request([{"attrs": [("a", 1)]}]).SerializeToString()
    payload = Payload.from_bytes(Signal.TRACES, body)
    payload.view()  # parsed before: the message must not be served without the attributes
    _attributes_processor(ACTIONS).process(payload)
    assert payload.stored_form()[0] == body and payload.deferred
    assert span_attrs(payload) == [[("a", 1)] + ADDED]
    assert payload.deferred == b"", "looking at the request adds the deferred attributes"


def test_a_later_processor_sees_deferred_attributes():
    payload = Payload.from_bytes(Signal.TRACES, span_request([{"attrs": []}, {"attrs": [("keep", True)]}])
                                 .SerializeToString())
    payload = _attributes_processor(ACTIONS).process(payload)
    drop_acme = FilterProcessor("filter", FilterConfig.model_validate({"spans": {"exclude": {
        "match_type": "strict", "attributes": [{"key": "tenant", "value": "acme"}]}}}))
    assert drop_acme.process(payload) is None, "the filter did not see the deferred attributes"


def test_a_second_processor_updates_what_the_first_deferred():
    payload = Payload.from_bytes(Signal.TRACES, span_request([{"attrs": [("a", 1)]}]).SerializeToString())
    payload = _attributes_processor(ACTIONS).process(payload)
    payload = _attributes_processor([{"key": "tenant", "value": "other", "action": "upsert"}]).process(payload)
    payload = _attributes_processor([{"key": "zone", "value": "z1", "action": "insert"}]).process(payload)
    assert span_attrs(payload) == [[("a", 1), ("tenant", "other"), ("site", 7), ("ratio", 0.5), ("zone", "z1")]]


def test_a_copy_for_another_pipeline_keeps_the_deferred_attributes_to_itself():
    payload = Payload.from_bytes(Signal.TRACES, span_request([{"attrs": []}]).SerializeToString())
    payload = _attributes_processor(ACTIONS).process(payload)
    other = payload.copy()
    _attributes_processor([{"key": "zone", "value": "z1", "action": "insert"}]).process(other)
    assert span_attrs(payload) == [ADDED]
    assert span_attrs(other) == [ADDED + [("zone", "z1")]]
