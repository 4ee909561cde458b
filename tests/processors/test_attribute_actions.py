"""Every attributes action, table-driven: a config, an input attribute list, the exact output."""

from __future__ import annotations

import hashlib
import struct
import time

import pytest
from pydantic import ValidationError

from edgeagent.processors.attributes import AttributesConfig, AttributesProcessor
from edgeagent.processors.resource import ResourceConfig, ResourceProcessor
from edgeagent.signals import Signal
from tests.processors.tables import attrs_to_python, log_request, metric_request, payload_of, span_attrs, span_request


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


ROWS = [
    # (id, actions, input attributes, expected attributes)
    ("insert adds a missing key", [{"key": "k", "value": "v", "action": "insert"}], [("a", 1)], [("a", 1), ("k", "v")]),
    ("insert leaves an existing key", [{"key": "a", "value": "v", "action": "insert"}], [("a", 1)], [("a", 1)]),
    ("update changes an existing key", [{"key": "a", "value": "v", "action": "update"}], [("a", 1)], [("a", "v")]),
    ("update ignores a missing key", [{"key": "k", "value": "v", "action": "update"}], [("a", 1)], [("a", 1)]),
    ("upsert inserts", [{"key": "k", "value": 7, "action": "upsert"}], [], [("k", 7)]),
    ("upsert updates and changes type", [{"key": "a", "value": 2.5, "action": "upsert"}], [("a", "x")], [("a", 2.5)]),
    ("upsert bool", [{"key": "b", "value": True, "action": "UPSERT"}], [], [("b", True)]),
    ("upsert empty string", [{"key": "e", "value": "", "action": "upsert"}], [], [("e", "")]),
    ("upsert map value", [{"key": "m", "value": {"x": 1}, "action": "upsert"}], [], [("m", {"x": 1})]),
    (
        "from_attribute copies",
        [{"key": "k", "from_attribute": "a", "action": "insert"}],
        [("a", 5)],
        [("a", 5), ("k", 5)],
    ),
    (
        "from_attribute missing source does nothing",
        [{"key": "k", "from_attribute": "zz", "action": "upsert"}],
        [("a", 5)],
        [("a", 5)],
    ),
    (
        "default_value when from_attribute finds nothing",
        [{"key": "k", "from_attribute": "zz", "default_value": "unknown", "action": "upsert"}],
        [("a", 5)],
        [("a", 5), ("k", "unknown")],
    ),
    (
        "from_attribute wins over default_value",
        [{"key": "k", "from_attribute": "a", "default_value": "unknown", "action": "insert"}],
        [("a", 5)],
        [("a", 5), ("k", 5)],
    ),
    ("default_value alone inserts", [{"key": "k", "default_value": 3, "action": "insert"}], [], [("k", 3)]),
    (
        "default_value obeys update",
        [{"key": "k", "from_attribute": "zz", "default_value": "d", "action": "update"}],
        [("a", 1)],
        [("a", 1)],
    ),
    (
        "value wins over default_value",
        [{"key": "k", "value": "v", "default_value": "d", "action": "upsert"}],
        [],
        [("k", "v")],
    ),
    ("delete removes", [{"key": "a", "action": "delete"}], [("a", 1), ("b", 2)], [("b", 2)]),
    ("delete missing is a no-op", [{"key": "z", "action": "delete"}], [("a", 1)], [("a", 1)]),
    (
        "delete by pattern",
        [{"pattern": "^secret\\.", "action": "delete"}],
        [("secret.a", 1), ("keep", 2), ("secret.b", 3)],
        [("keep", 2)],
    ),
    (
        "delete by key and pattern",
        [{"key": "x", "pattern": "^y", "action": "delete"}],
        [("x", 1), ("y1", 2), ("z", 3)],
        [("z", 3)],
    ),
    ("hash string", [{"key": "u", "action": "hash"}], [("u", "alice")], [("u", sha256(b"alice"))]),
    ("hash int", [{"key": "n", "action": "hash"}], [("n", 42)], [("n", sha256(struct.pack("<q", 42)))]),
    ("hash double", [{"key": "d", "action": "hash"}], [("d", 1.5)], [("d", sha256(struct.pack("<d", 1.5)))]),
    ("hash bool", [{"key": "b", "action": "hash"}], [("b", True)], [("b", sha256(b"\x01"))]),
    ("hash empty string is the hash of no bytes", [{"key": "s", "action": "hash"}], [("s", "")], [("s", sha256(b""))]),
    ("hash key that the pattern also matches hashes twice, as otelcol does",
     [{"key": "k", "pattern": "^k$", "action": "hash"}], [("k", "v")], [("k", sha256(sha256(b"v").encode()))]),
    ("hash map becomes empty", [{"key": "m", "action": "hash"}], [("m", {"x": 1})], [("m", "")]),
    ("hash missing is a no-op", [{"key": "zz", "action": "hash"}], [("a", 1)], [("a", 1)]),
    (
        "hash by pattern",
        [{"pattern": "^pii", "action": "hash"}],
        [("pii.email", "a@b"), ("x", "y")],
        [("pii.email", sha256(b"a@b")), ("x", "y")],
    ),
    (
        "extract named groups",
        [{"key": "url", "pattern": r"^/api/(?P<version>v\d+)/(?P<resource>\w+)", "action": "extract"}],
        [("url", "/api/v2/users?x=1")],
        [("url", "/api/v2/users?x=1"), ("version", "v2"), ("resource", "users")],
    ),
    (
        "extract overwrites an existing target",
        [{"key": "url", "pattern": r"(?P<version>v\d+)", "action": "extract"}],
        [("url", "v3"), ("version", 1)],
        [("url", "v3"), ("version", "v3")],
    ),
    (
        "extract without match does nothing",
        [{"key": "url", "pattern": r"^(?P<v>x)", "action": "extract"}],
        [("url", "abc")],
        [("url", "abc")],
    ),
    (
        "extract ignores non-string source",
        [{"key": "n", "pattern": r"(?P<d>\d)", "action": "extract"}],
        [("n", 12)],
        [("n", 12)],
    ),
    (
        "extract accepts Go named-group syntax",
        [{"key": "p", "pattern": r"(?<id>\d+)", "action": "extract"}],
        [("p", "id-77")],
        [("p", "id-77"), ("id", "77")],
    ),
    (  # Go allows a name twice: each group is set in turn, so the last one named so wins, even ""
        "extract with a name used twice sets it from its last group",
        [{"key": "s", "pattern": r"^(?P<v>\d+)$|^(?P<w>x)?(?P<v>[a-z]+)$", "action": "extract"}],
        [("s", "123")],
        [("s", "123"), ("v", ""), ("w", "")],
    ),
    (
        "extract with a name used twice takes the group that matched last",
        [{"key": "s", "pattern": r"^(?P<v>\d+)$|^(?P<w>x)?(?P<v>[a-z]+)$", "action": "extract"}],
        [("s", "abc")],
        [("s", "abc"), ("v", "abc"), ("w", "")],
    ),
    (
        "convert string to int",
        [{"key": "n", "action": "convert", "converted_type": "int"}],
        [("n", "123")],
        [("n", 123)],
    ),
    (
        "convert bad string to int keeps it",
        [{"key": "n", "action": "convert", "converted_type": "int"}],
        [("n", "12a")],
        [("n", "12a")],
    ),
    (
        "convert double to int truncates",
        [{"key": "n", "action": "convert", "converted_type": "int"}],
        [("n", -2.7)],
        [("n", -2)],
    ),
    ("convert bool to int", [{"key": "b", "action": "convert", "converted_type": "int"}], [("b", True)], [("b", 1)]),
    (
        "convert a double out of int64's range to int gives Go's int64 of it, not an error",
        [{"key": k, "action": "convert", "converted_type": "int"} for k in "abc"],
        [("a", 1e300), ("b", float("nan")), ("c", float("-inf"))],
        [("a", -1 << 63), ("b", -1 << 63), ("c", -1 << 63)],
    ),
    (
        "convert int to double",
        [{"key": "n", "action": "convert", "converted_type": "double"}],
        [("n", 3)],
        [("n", 3.0)],
    ),
    (
        "convert string to double",
        [{"key": "n", "action": "convert", "converted_type": "double"}],
        [("n", "1e3")],
        [("n", 1000.0)],
    ),
    (
        "convert int to string",
        [{"key": "n", "action": "convert", "converted_type": "string"}],
        [("n", 3)],
        [("n", "3")],
    ),
    (
        "convert double to string as Go does",
        [{"key": "n", "action": "convert", "converted_type": "string"}],
        [("n", 2.0)],
        [("n", "2")],
    ),
    (
        "convert to string writes doubles, maps and lists as pcommon's AsString does",
        [{"key": k, "action": "convert", "converted_type": "string"} for k in "abcm"],
        [("a", 1e-7), ("b", 1e21), ("c", float("-inf")), ("m", {"z": 1.0, "a": ["é<&>\u2028", 2.5e-7]})],
        [("a", "1e-7"), ("b", "1e+21"), ("c", "-Infinity"), ("m", '{"a":["é<&>\\u2028",2.5e-7],"z":1}')],
    ),
    (
        "convert bool to string",
        [{"key": "b", "action": "convert", "converted_type": "string"}],
        [("b", False)],
        [("b", "false")],
    ),
    (
        "convert missing is a no-op",
        [{"key": "z", "action": "convert", "converted_type": "int"}],
        [("a", 1)],
        [("a", 1)],
    ),
    (
        "actions run in order",
        [
            {"key": "a", "value": "1", "action": "upsert"},
            {"key": "a", "action": "convert", "converted_type": "int"},
            {"key": "b", "from_attribute": "a", "action": "insert"},
            {"key": "a", "action": "delete"},
        ],
        [],
        [("b", 1)],
    ),
]


@pytest.mark.parametrize("actions,given,expected", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_attributes_action_on_spans(actions, given, expected):
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": actions}))
    payload = payload_of(Signal.TRACES, span_request([{"attrs": given}]))
    processor.process(payload)
    assert span_attrs(payload) == [expected]


@pytest.mark.parametrize("actions,given,expected", [row[1:] for row in ROWS[:14]], ids=[row[0] for row in ROWS[:14]])
def test_attributes_action_on_logs_and_every_data_point_type(actions, given, expected):
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": actions}))
    logs = payload_of(Signal.LOGS, log_request([{"attrs": given}]))
    processor.process(logs)
    record = logs.view().resource_logs[0].scope_logs[0].log_records[0]
    assert attrs_to_python(record.attributes) == expected

    kinds = ["gauge", "sum", "histogram", "summary", "exponential_histogram"]
    metrics = payload_of(Signal.METRICS, metric_request([{"name": k, "kind": k, "points": [given]} for k in kinds]))
    processor.process(metrics)
    for metric in metrics.view().resource_metrics[0].scope_metrics[0].metrics:
        point = getattr(metric, metric.WhichOneof("data")).data_points[0]
        assert attrs_to_python(point.attributes) == expected, metric.name


@pytest.mark.parametrize("actions,given,expected", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_resource_processor_runs_the_same_actions_on_resource_attributes(actions, given, expected):
    processor = ResourceProcessor("resource", ResourceConfig.model_validate({"attributes": actions}))
    payload = payload_of(Signal.TRACES, span_request([{"attrs": [("span", 1)]}], resource=given))
    processor.process(payload)
    message = payload.view()
    assert attrs_to_python(message.resource_spans[0].resource.attributes) == expected
    assert span_attrs(payload) == [[("span", 1)]]


def test_from_context_reads_request_metadata_and_client_address():
    actions = [{"key": "tenant", "from_context": "metadata.x-tenant-id", "action": "insert"},
               {"key": "legacy", "from_context": "x-tenant-id", "action": "insert"},
               {"key": "peer", "from_context": "client.address", "action": "insert"},
               {"key": "missing", "from_context": "metadata.nope", "action": "insert"}]
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": actions}))
    payload = payload_of(Signal.TRACES, span_request([{}]), metadata={"x-tenant-id": "acme;beta"},
                         client_address="127.0.0.1")
    processor.process(payload)
    assert span_attrs(payload) == [[("tenant", "acme;beta"), ("legacy", "acme;beta"), ("peer", "127.0.0.1")]]


def test_from_context_falls_back_to_default_value_when_the_request_lacks_it():
    actions = [{"key": "tenant", "from_context": "metadata.x-tenant-id", "default_value": "none", "action": "upsert"}]
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": actions}))
    with_tenant = payload_of(Signal.TRACES, span_request([{}]), metadata={"x-tenant-id": "acme"})
    without = payload_of(Signal.TRACES, span_request([{}]), metadata={})
    processor.process(with_tenant)
    processor.process(without)
    assert span_attrs(with_tenant) == [[("tenant", "acme")]]
    assert span_attrs(without) == [[("tenant", "none")]]


def test_fast_append_path_gives_the_same_result_as_the_general_path():
    actions = [{"key": "tenant", "value": "acme", "action": "upsert"}, {"key": "site", "value": 7, "action": "insert"}]
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": actions}))
    absent = payload_of(Signal.TRACES, span_request([{"attrs": [("a", 1)]}, {"attrs": []}]))
    processor.process(absent)
    assert span_attrs(absent) == [[("a", 1), ("tenant", "acme"), ("site", 7)], [("tenant", "acme"), ("site", 7)]]
    # the key occurs in the bytes (as a value), so the general path runs, with the same outcome
    present = payload_of(Signal.TRACES, span_request([{"attrs": [("a", "tenant")]}, {"attrs": [("tenant", "old")]}]))
    processor.process(present)
    assert span_attrs(present) == [[("a", "tenant"), ("tenant", "acme"), ("site", 7)],
                                   [("tenant", "acme"), ("site", 7)]]


def test_a_processor_that_changes_nothing_keeps_the_received_bytes():
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate(
        {"actions": [{"key": "zz", "action": "delete"}, {"key": "a", "value": 1, "action": "insert"}]}))
    request = span_request([{"attrs": [("a", 1)]}])
    payload = payload_of(Signal.TRACES, request)
    raw = payload.raw
    processor.process(payload)
    assert not payload.changed
    assert payload.serialized() is raw


def _delete_by_pattern_seconds(count: int) -> tuple[float, list[tuple[str, object]]]:
    """CPU seconds of this thread to delete the first half of `count` attributes of one span by
    pattern (best of three): the thread's own time, which other work on a loaded machine does not add to."""
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate(
        {"actions": [{"pattern": "^secret\\.", "action": "delete"}]}))
    best, left = float("inf"), []
    for _ in range(3):
        given = [(f"secret.{i}" if i < count // 2 else f"keep.{i}", i) for i in range(count)]
        payload = payload_of(Signal.TRACES, span_request([{"attrs": given}]))
        payload.view()
        started = time.thread_time()
        processor.process(payload)
        best = min(best, time.thread_time() - started)
        left = span_attrs(payload)[0]
    return best, left


def test_delete_by_pattern_on_a_span_with_many_attributes_takes_time_linear_in_their_number():
    # deleting one by one moved the attributes behind each: 8 times the attributes took 21 times as long
    small, _ = _delete_by_pattern_seconds(20_000)
    large, left = _delete_by_pattern_seconds(160_000)
    assert left == [(f"keep.{i}", i) for i in range(80_000, 160_000)]
    assert large < 14 * small, (small, large)


BAD_ACTIONS = [
    ({"key": "k", "action": "upsertt", "value": 1}, "action"),
    ({"action": "insert", "value": 1}, "needs a key"),
    ({"key": "k", "action": "insert"}, "exactly one of value"),
    ({"key": "k", "action": "insert", "value": 1, "from_attribute": "a"}, "exactly one of value"),
    ({"action": "delete"}, "key, pattern or both"),
    ({"key": "k", "action": "delete", "value": 1}, "does not use value"),
    ({"key": "k", "action": "extract"}, "needs a pattern"),
    ({"key": "k", "action": "extract", "pattern": "(\\d+)"}, "no named groups"),
    ({"key": "k", "action": "extract", "pattern": "(?P<a>x)(y)"}, "unnamed group"),
    ({"key": "k", "action": "convert"}, "converted_type"),
    ({"key": "k", "action": "convert", "converted_type": "bool"}, "converted_type"),
    ({"key": "k", "action": "hash", "pattern": "("}, "invalid pattern"),
    ({"key": "k", "action": "insert", "value": 1, "pattern": "x"}, "does not use pattern"),
    ({"key": "k", "action": "convert", "converted_type": "int", "pattern": "x"}, "does not use pattern"),
    ({"key": "k", "action": "hash", "from_attribute": "a"}, "does not use value or from_attribute"),
    ({"key": "k", "action": "convert", "converted_type": "int", "from_context": "a"}, "does not use value"),
    ({"key": "k", "action": "upsert", "default_value": object()}, "value must be"),
]


@pytest.mark.parametrize("action,message", BAD_ACTIONS, ids=[m for _, m in BAD_ACTIONS])
def test_invalid_actions_are_config_errors(action, message):
    with pytest.raises(ValidationError) as error:
        AttributesConfig.model_validate({"actions": [action]})
    assert message in str(error.value)


def test_client_address_is_found_even_when_the_request_has_none():
    # otelcol's from_context reads client.address as "" then (a unix socket, a pipeline's own data),
    # and a found value, even "", wins over default_value
    actions = [{"key": "peer", "from_context": "client.address", "default_value": "unknown", "action": "upsert"}]
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": actions}))
    payload = payload_of(Signal.TRACES, span_request([{}]), client_address="")
    processor.process(payload)
    assert span_attrs(payload) == [[("peer", "")]]


def test_an_empty_from_attribute_names_no_attribute():
    # otelcol reads from_attribute only when it is not "": an attribute keyed "" is not its source
    actions = [{"key": "k", "from_attribute": "", "default_value": "d", "action": "upsert"}]
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": actions}))
    payload = payload_of(Signal.TRACES, span_request([{"attrs": [("", "blank")]}]))
    processor.process(payload)
    assert span_attrs(payload) == [[("", "blank"), ("k", "d")]]


def test_resources_select_spans_but_not_metrics_as_in_otelcol():
    # otelcol's attributes processor selects metrics by metric_names alone: include/exclude
    # resources are accepted for metrics and select nothing there
    config = AttributesConfig.model_validate({
        "include": {"match_type": "strict", "resources": [{"key": "env", "value": "prod"}]},
        "exclude": {"match_type": "strict", "metric_names": ["skipped"], "resources": [{"key": "env", "value": "dev"}]},
        "actions": [{"key": "seen", "value": True, "action": "upsert"}]})
    processor = AttributesProcessor("attributes", config)
    metrics = payload_of(Signal.METRICS, metric_request([{"name": "kept"}, {"name": "skipped"}],
                                                        resource=[("env", "dev")]))
    processor.process(metrics)
    assert [(m.name, attrs_to_python(m.gauge.data_points[0].attributes))
            for m in metrics.view().resource_metrics[0].scope_metrics[0].metrics] == \
        [("kept", [("seen", True)]), ("skipped", [])]
    spans = payload_of(Signal.TRACES, span_request([{}], resource=[("env", "dev")]))
    processor.process(spans)
    assert span_attrs(spans) == [[]]
