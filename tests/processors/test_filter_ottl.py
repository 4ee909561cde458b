"""The filter processor's OTTL conditions drop what otelcol 0.165's filter drops: by level
(resource, scope, item, sub-item), emptied scopes, resources and metrics removed, error modes."""

from __future__ import annotations

import pytest

from edgeagent.errors import RetryableError
from edgeagent.processors.filter import FilterConfig, FilterProcessor
from edgeagent.signals import Payload, Signal
from tests.processors.tables import log_request, metric_request, payload_of, span_request
from tests.processors.test_filter import Host


def run(config: dict, payload: Payload, host: Host | None = None) -> Payload | None:
    return FilterProcessor("filter/x", FilterConfig.model_validate(config), host or Host()).process(payload)


def span_names(payload: Payload | None) -> list[str]:
    if payload is None:
        return []
    return [s.name for rs in payload.view().resource_spans for ss in rs.scope_spans for s in ss.spans]


SPANS = [{"name": "a", "attrs": [("http.route", "/a")]}, {"name": "healthz"}, {"name": "b", "kind": 2}]


@pytest.mark.parametrize("config, kept", [
    ({"trace_conditions": ['span.name == "healthz"']}, ["a", "b"]),
    ({"trace_conditions": ['span.name == "healthz"', 'span.attributes["http.route"] == "/a"']}, ["b"]),
    ({"trace_conditions": ["span.kind == SPAN_KIND_SERVER"]}, ["a", "healthz"]),
    ({"trace_conditions": [{"context": "span", "conditions": ['name == "a"', "IsRootSpan() and kind == 2"]}]},
     ["healthz"]),
    ({"traces": {"span": ['name == "a"', 'span.name == "b"']}}, ["healthz"]),
    ({"trace_conditions": ['resource.attributes["service.name"] == "svc"']}, []),
    ({"trace_conditions": ['instrumentation_scope.name == "lib" and span.name == "a"']}, ["healthz", "b"]),
    ({"trace_conditions": ['scope.name == "lib"']}, []),
    ({"traces": {"resource": ['attributes["service.name"] == "other"']}}, ["a", "healthz", "b"]),
], ids=["one", "any-of-two", "enum", "explicit-context", "older-lists", "resource", "scope-and-span", "scope",
        "resource-miss"])
def test_spans_matching_any_condition_are_dropped_and_counted(config, kept):
    host = Host()
    result = run(config, payload_of(Signal.TRACES, span_request(SPANS)), host)
    assert span_names(result) == kept
    assert host.counts.get("otelcol_processor_filter_spans_filtered", 0) == 3 - len(kept)
    if not kept:
        assert result is None


def test_span_events_are_dropped_and_the_span_stays_without_them():
    request = span_request([{"name": "a"}])
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.events.add(name="exception")
    span.events.add(name="cache.miss")
    payload = payload_of(Signal.TRACES, request)
    result = run({"trace_conditions": ['spanevent.name == "exception"', 'spanevent.name == "cache.miss"']}, payload)
    assert result is not None and span_names(result) == ["a"]
    assert len(result.view().resource_spans[0].scope_spans[0].spans[0].events) == 0
    assert result.changed  # the events are gone from what is sent on


def test_a_dropped_span_is_not_looked_at_by_event_conditions():
    request = span_request([{"name": "a"}])
    request.resource_spans[0].scope_spans[0].spans[0].events.add(name="e")
    # the event condition would fail under propagate; the span condition drops the span first
    result = run({"error_mode": "propagate", "trace_conditions": [
        'span.name == "a"', 'spanevent.attributes["k"][0] == "x"']}, payload_of(Signal.TRACES, request))
    assert result is None


LOGS = [{"body": "password=1", "severity": 5}, {"body": "disk full", "severity": 17, "attrs": [("user", "ann")]},
        {"body": "ok", "severity": 9}]


def bodies(payload: Payload | None) -> list[str]:
    if payload is None:
        return []
    return [r.body.string_value for rl in payload.view().resource_logs for sl in rl.scope_logs
            for r in sl.log_records]


@pytest.mark.parametrize("config, kept", [
    ({"log_conditions": ['IsMatch(log.body, ".*password.*")', "log.severity_number < SEVERITY_NUMBER_WARN"]},
     ["disk full"]),
    ({"logs": {"log_record": ['attributes["user"] == "ann"']}}, ["password=1", "ok"]),
    ({"logs": {"log_record": ['severity_text == ""']}}, []),
    ({"log_conditions": [{"conditions": ['log.body == "ok"']}, {"conditions": ['log.body == "disk full"']}]},
     ["password=1"]),
])
def test_log_records_matching_any_condition_are_dropped(config, kept):
    host = Host()
    result = run(config, payload_of(Signal.LOGS, log_request(LOGS)), host)
    assert bodies(result) == kept
    assert host.counts.get("otelcol_processor_filter_logs_filtered", 0) == 3 - len(kept)


METRICS = [{"name": "keep", "points": [[("a", "1")], [("a", "2")]]},
           {"name": "debug.hist", "kind": "histogram", "points": [[]]},
           {"name": "mixed", "kind": "sum", "points": [[("bad", "true")], [("a", "3")]]}]


def metric_points(payload: Payload | None) -> dict[str, int]:
    if payload is None:
        return {}
    out = {}
    for rm in payload.view().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = len(getattr(metric, metric.WhichOneof("data")).data_points)
    return out


@pytest.mark.parametrize("config, kept", [
    ({"metric_conditions": ["metric.type == METRIC_DATA_TYPE_HISTOGRAM"]}, {"keep": 2, "mixed": 2}),
    ({"metrics": {"metric": ['HasAttrKeyOnDatapoint("bad")']}}, {"keep": 2, "debug.hist": 1}),
    ({"metric_conditions": [{"context": "metric", "conditions": ['HasAttrOnDatapoint("bad", "true")']}]},
     {"keep": 2, "debug.hist": 1}),
    ({"metric_conditions": ['datapoint.attributes["bad"] == "true"']}, {"keep": 2, "debug.hist": 1, "mixed": 1}),
    ({"metric_conditions": ['datapoint.attributes["a"] != nil']}, {"debug.hist": 1, "mixed": 1}),
    ({"metrics": {"datapoint": ['metric.name == "keep" and attributes["a"] == "1"']}},
     {"keep": 1, "debug.hist": 1, "mixed": 2}),
    ({"metrics": {"metric": ['IsMatch(name, "^debug")']}}, {"keep": 2, "mixed": 2}),
])
def test_metrics_and_data_points_matching_are_dropped_and_emptied_metrics_go(config, kept):
    host = Host()
    result = run(config, payload_of(Signal.METRICS, metric_request(METRICS)), host)
    assert metric_points(result) == kept
    assert host.counts.get("otelcol_processor_filter_datapoints_filtered", 0) == 5 - sum(kept.values())


def test_propagate_fails_the_request_after_counting_and_ignore_goes_on():
    condition = 'span.attributes["http.route"][0] == "x"'  # indexing a string fails on span "a"
    with pytest.raises(RetryableError, match="filter/x"):
        run({"error_mode": "propagate", "trace_conditions": [condition, 'span.name == "b"']},
            payload_of(Signal.TRACES, span_request(SPANS)))
    for mode in ("ignore", "silent", "IGNORE"):
        kept = span_names(run({"error_mode": mode, "trace_conditions": [condition, 'span.name == "b"']},
                              payload_of(Signal.TRACES, span_request(SPANS))))
        assert kept == ["a", "healthz"]


def test_a_group_error_mode_overrides_the_processors():
    condition = 'span.attributes["http.route"][0] == "x"'
    result = run({"error_mode": "propagate", "trace_conditions": [
        {"error_mode": "ignore", "conditions": [condition]}]}, payload_of(Signal.TRACES, span_request(SPANS)))
    assert span_names(result) == ["a", "healthz", "b"]


def test_nothing_matched_keeps_the_received_bytes():
    payload = payload_of(Signal.TRACES, span_request(SPANS))
    raw = payload.raw
    result = run({"trace_conditions": ['span.name == "nope"']}, payload)
    assert result is not None and result.serialized() is raw
