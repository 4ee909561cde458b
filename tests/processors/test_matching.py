"""include / exclude as otelcol's legacy match properties define them, table-driven."""

from __future__ import annotations

import time

import pytest
import yaml
from pydantic import ValidationError

from edgeagent.config.loader import ConfigError, load_text
from edgeagent.processors.attributes import AttributesConfig, AttributesProcessor
from edgeagent.processors.matching import MatchProperties
from edgeagent.signals import Signal
from tests.processors.tables import attrs_to_python, log_request, metric_request, payload_of, span_attrs, span_request

MARK = [{"key": "hit", "value": True, "action": "insert"}]
SPANS = [
    {"name": "GET /users", "kind": 2, "attrs": [("http.method", "GET"), ("status", 200)]},
    {"name": "POST /users", "kind": 2, "attrs": [("http.method", "POST"), ("status", 500)]},
    {"name": "db.query", "kind": 3, "attrs": [("db.system", "postgres")]},
    {"name": "internal", "kind": 1, "attrs": [("m", {"a": 1, "b": [1, "x"]})]},
]

SPAN_ROWS = [
    ("services strict", {"include": {"match_type": "strict", "services": ["svc"]}}, [1, 1, 1, 1]),
    ("services strict miss", {"include": {"match_type": "strict", "services": ["other"]}}, [0, 0, 0, 0]),
    ("span_names strict", {"include": {"match_type": "strict", "span_names": ["db.query", "internal"]}}, [0, 0, 1, 1]),
    ("span_names regexp is a search", {"include": {"match_type": "regexp", "span_names": ["users"]}}, [1, 1, 0, 0]),
    ("span_names regexp anchored", {"include": {"match_type": "regexp", "span_names": ["^GET"]}}, [1, 0, 0, 0]),
    ("span_names regexp in Go's syntax", {"include": {"match_type": "regexp", "span_names": [
        "^[[:upper:]]+ /users$"]}}, [1, 1, 0, 0]),
    ("span_kinds", {"include": {"match_type": "strict", "span_kinds": ["SPAN_KIND_CLIENT"]}}, [0, 0, 1, 0]),
    ("attributes all must match", {"include": {"match_type": "strict", "attributes": [
        {"key": "http.method", "value": "POST"}, {"key": "status", "value": 500}]}}, [0, 1, 0, 0]),
    ("attribute value type matters", {"include": {"match_type": "strict", "attributes": [
        {"key": "status", "value": "500"}]}}, [0, 0, 0, 0]),
    ("attribute strict map value, its keys in any order", {"include": {"match_type": "strict", "attributes": [
        {"key": "m", "value": {"b": [1, "x"], "a": 1}}]}}, [0, 0, 0, 1]),
    ("attribute strict map value of other types", {"include": {"match_type": "strict", "attributes": [
        {"key": "m", "value": {"a": 1.0, "b": [1, "x"]}}]}}, [0, 0, 0, 0]),
    ("attribute key only", {"include": {"match_type": "strict", "attributes": [{"key": "db.system"}]}}, [0, 0, 1, 0]),
    ("attribute regexp on int as text", {"include": {"match_type": "regexp", "attributes": [
        {"key": "status", "value": "^5"}]}}, [0, 1, 0, 0]),
    ("resources", {"include": {"match_type": "strict", "resources": [{"key": "env", "value": "prod"}]}}, [1, 1, 1, 1]),
    ("resources miss", {"include": {"match_type": "strict", "resources": [{"key": "env", "value": "dev"}]}},
     [0, 0, 0, 0]),
    ("libraries name", {"include": {"match_type": "strict", "libraries": [{"name": "lib"}]}}, [1, 1, 1, 1]),
    ("libraries version must match when given", {"include": {"match_type": "strict", "libraries": [
        {"name": "lib", "version": "2.0"}]}}, [0, 0, 0, 0]),
    ("exclude only", {"exclude": {"match_type": "strict", "span_names": ["internal"]}}, [1, 1, 1, 0]),
    ("include then exclude", {"include": {"match_type": "regexp", "span_names": ["users"]},
                              "exclude": {"match_type": "strict", "attributes": [{"key": "status", "value": 500}]}},
     [1, 0, 0, 0]),
    ("properties are ANDed", {"include": {"match_type": "strict", "span_names": ["GET /users", "db.query"],
                                          "span_kinds": ["SPAN_KIND_SERVER"]}}, [1, 0, 0, 0]),
]


@pytest.mark.parametrize("match,expected", [r[1:] for r in SPAN_ROWS], ids=[r[0] for r in SPAN_ROWS])
def test_include_exclude_selects_spans(match, expected):
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": MARK, **match}))
    payload = payload_of(Signal.TRACES, span_request(SPANS, resource=[("service.name", "svc"), ("env", "prod")]))
    processor.process(payload)
    spans = payload.view().resource_spans[0].scope_spans[0].spans
    assert [int(("hit", True) in attrs_to_python(span.attributes)) for span in spans] == expected


def test_a_name_that_makes_a_backtracking_regexp_explode_is_matched_in_linear_time():
    # ^(\w+\s?)*$ backtracks 2^n ways on n word characters and a non-word one; Go's RE2 does not
    hostile = "a" * 26 + "!"
    selecting = AttributesProcessor("attributes", AttributesConfig.model_validate({
        "actions": MARK, "include": {"match_type": "regexp", "span_names": [r"^(\w+\s?)*$"]}}))
    deleting = AttributesProcessor("attributes", AttributesConfig.model_validate({
        "actions": [{"pattern": r"^(\w+\s?)*$", "action": "delete"}]}))
    payload = payload_of(Signal.TRACES, span_request([{"name": hostile, "attrs": [(hostile, 1)]}]))
    started = time.monotonic()
    deleting.process(selecting.process(payload))
    assert time.monotonic() - started < 0.1
    assert span_attrs(payload) == [[(hostile, 1)]]


LOG_ROWS = [
    ("log_bodies", {"include": {"match_type": "strict", "log_bodies": ["disk full"]}}, [1, 0, 0]),
    ("log_bodies regexp", {"include": {"match_type": "regexp", "log_bodies": ["^disk"]}}, [1, 1, 0]),
    ("severity texts", {"include": {"match_type": "strict", "log_severity_texts": ["ERROR"]}}, [1, 0, 0]),
    ("severity number min", {"include": {"match_type": "strict", "log_severity_number": {"min": "WARN"}}}, [1, 1, 0]),
    ("severity undefined matches when asked", {"include": {"match_type": "strict", "log_severity_number": {
        "min": "ERROR", "match_undefined": True}}}, [1, 0, 1]),
    ("log attributes", {"include": {"match_type": "strict", "attributes": [{"key": "code", "value": 7}]}}, [0, 1, 0]),
]
LOGS = [
    {"body": "disk full", "severity": 17, "severity_text": "ERROR", "attrs": []},
    {"body": "disk slow", "severity": 13, "severity_text": "WARN", "attrs": [("code", 7)]},
    {"body": 42, "severity": 0, "attrs": []},
]


@pytest.mark.parametrize("match,expected", [r[1:] for r in LOG_ROWS], ids=[r[0] for r in LOG_ROWS])
def test_include_exclude_selects_log_records(match, expected):
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate({"actions": MARK, **match}))
    payload = payload_of(Signal.LOGS, log_request(LOGS))
    processor.process(payload)
    records = payload.view().resource_logs[0].scope_logs[0].log_records
    assert [int(("hit", True) in attrs_to_python(r.attributes)) for r in records] == expected


def test_bodies_and_service_names_are_matched_as_pcommons_asstring_writes_them():
    # otelcol matches a log body's AsString (a map as JSON) and a missing service.name as "<nil-service-name>"
    logs = AttributesProcessor("attributes", AttributesConfig.model_validate(
        {"actions": MARK, "include": {"match_type": "regexp", "log_bodies": ['"password":']}}))
    payload = payload_of(Signal.LOGS, log_request([{"body": {"user": "ann", "password": "x"}}, {"body": "ok"}]))
    logs.process(payload)
    records = payload.view().resource_logs[0].scope_logs[0].log_records
    assert [("hit", True) in attrs_to_python(record.attributes) for record in records] == [True, False]

    spans = AttributesProcessor("attributes", AttributesConfig.model_validate(
        {"actions": MARK, "exclude": {"match_type": "regexp", "services": ["^$"]}}))
    payload = payload_of(Signal.TRACES, span_request([{"name": "s"}], resource=[("host", "h")]))
    spans.process(payload)
    assert span_attrs(payload) == [[("hit", True)]]


def test_include_selects_whole_metrics_by_name():
    processor = AttributesProcessor("attributes", AttributesConfig.model_validate(
        {"actions": MARK, "include": {"match_type": "regexp", "metric_names": ["^http\\."]}}))
    payload = payload_of(Signal.METRICS, metric_request([{"name": "http.requests", "points": [[], [("a", 1)]]},
                                                         {"name": "cpu", "points": [[]]}]))
    processor.process(payload)
    metrics = payload.view().resource_metrics[0].scope_metrics[0].metrics
    assert [[("hit", True) in attrs_to_python(p.attributes) for p in m.gauge.data_points] for m in metrics] == \
        [[True, True], [False]]


BAD = [
    ({"match_type": "strict"}, "at least one of"),
    ({"match_type": "strict", "span_kinds": ["SERVER"]}, "standard span kind"),
    ({"match_type": "regexp", "span_names": ["("]}, "invalid regular expression"),
    ({"match_type": "regexp", "attributes": [{"key": "a", "value": 1}]}, "string values"),
    ({"match_type": "glob", "services": ["x"]}, "match_type"),
    ({"match_type": "strict", "log_severity_number": {"min": "LOUD"}}, "unknown severity"),
]


@pytest.mark.parametrize("properties,message", BAD, ids=[m for _, m in BAD])
def test_invalid_match_properties_are_config_errors(properties, message):
    with pytest.raises(ValidationError) as error:
        MatchProperties.model_validate(properties)
    assert message in str(error.value)


@pytest.mark.parametrize(("signal", "include", "word"), [
    ("traces", {"log_bodies": ["x"]}, "log_bodies"),
    ("logs", {"span_names": ["x"]}, "span_names"),
    ("metrics", {"attributes": [{"key": "a"}]}, "attributes"),
])
def test_match_properties_that_cannot_select_in_the_pipelines_signal_are_refused(signal, include, word):
    # otelcol refuses them when it builds the pipeline; ignored, the include would select every item
    text = yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318"}}}},
        "processors": {"attributes": {"include": {"match_type": "strict", **include},
                                      "actions": [{"key": "k", "action": "delete"}]}},
        "exporters": {"otlp_http": {"endpoint": "http://127.0.0.1:4319"}},
        "service": {"pipelines": {signal: {"receivers": ["otlp"], "processors": ["attributes"],
                                           "exporters": ["otlp_http"]}}}})
    with pytest.raises(ConfigError) as refused:
        load_text(text)
    assert [path for path, _ in refused.value.errors] == ["processors::attributes::include"]
    assert word in refused.value.errors[0][1] and signal in refused.value.errors[0][1]
