"""The filter processor drops what its legacy match properties select, and counts it."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from edgeagent.processors.filter import FilterConfig, FilterProcessor
from edgeagent.signals import Signal
from tests.processors.tables import log_request, metric_request, payload_of, span_request


class Host:
    def __init__(self) -> None:
        self.counts: dict[str, float] = {}

    def counter_inc(self, name: str, amount: float, *labels: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount


def names(payload) -> list[str]:
    message = payload.view()
    return [s.name for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]


SPAN_ROWS = [
    ("exclude drops matches", {"spans": {"exclude": {"match_type": "strict", "span_names": ["healthz"]}}},
     ["a", "b"]),
    ("include keeps only matches", {"spans": {"include": {"match_type": "regexp", "span_names": ["^a"]}}}, ["a"]),
    ("include then exclude", {"spans": {"include": {"match_type": "regexp", "span_names": ["^[ab]"]},
                                        "exclude": {"match_type": "strict", "attributes": [{"key": "x", "value": 1}]}}},
     ["a"]),
    ("no block keeps everything", {}, ["a", "b", "healthz"]),
]


@pytest.mark.parametrize("config,kept", [r[1:] for r in SPAN_ROWS], ids=[r[0] for r in SPAN_ROWS])
def test_filter_spans(config, kept):
    host = Host()
    processor = FilterProcessor("filter", FilterConfig.model_validate(config), host)
    payload = payload_of(Signal.TRACES, span_request([{"name": "a"}, {"name": "b", "attrs": [("x", 1)]},
                                                      {"name": "healthz"}]))
    result = processor.process(payload)
    assert names(result) == kept
    assert result.items == len(kept)
    assert host.counts.get("otelcol_processor_filter_spans_filtered", 0) == 3 - len(kept)


def test_a_request_left_empty_stops_in_the_pipeline_and_empty_groups_are_removed():
    processor = FilterProcessor("filter", FilterConfig.model_validate(
        {"spans": {"exclude": {"match_type": "strict", "services": ["noisy"]}}}), Host())
    payload = payload_of(Signal.TRACES, span_request([{"name": "a"}], resource=[("service.name", "noisy")]))
    assert processor.process(payload) is None


def test_filter_logs_with_the_legacy_log_keys():
    host = Host()
    processor = FilterProcessor("filter", FilterConfig.model_validate({"logs": {
        "include": {"match_type": "strict", "severity_number": {"min": "warn"}},
        "exclude": {"match_type": "regexp", "bodies": ["^ignore"]}}}), host)
    payload = payload_of(Signal.LOGS, log_request([
        {"body": "keep me", "severity": 17}, {"body": "ignore me", "severity": 17}, {"body": "debug", "severity": 5}]))
    result = processor.process(payload)
    bodies = [r.body.string_value for rl in result.view().resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert bodies == ["keep me"]
    assert host.counts["otelcol_processor_filter_logs_filtered"] == 2


def test_filter_metrics_by_name_and_counts_data_points():
    host = Host()
    processor = FilterProcessor("filter", FilterConfig.model_validate(
        {"metrics": {"exclude": {"match_type": "regexp", "metric_names": ["^debug\\."]}}}), host)
    payload = payload_of(Signal.METRICS, metric_request([{"name": "debug.x", "points": [[], []]},
                                                         {"name": "http.requests", "points": [[]]}]))
    result = processor.process(payload)
    assert [m.name for m in result.view().resource_metrics[0].scope_metrics[0].metrics] == ["http.requests"]
    assert result.items == 1
    assert host.counts["otelcol_processor_filter_datapoints_filtered"] == 2


def test_a_filter_that_drops_nothing_keeps_the_received_bytes():
    processor = FilterProcessor("filter", FilterConfig.model_validate(
        {"spans": {"exclude": {"match_type": "strict", "span_names": ["nope"]}}}), Host())
    payload = payload_of(Signal.TRACES, span_request([{"name": "a"}]))
    raw = payload.raw
    assert processor.process(payload).serialized() is raw


@pytest.mark.parametrize("config,message", [
    ({"profile_conditions": ['profile.duration_unix_nano > 3000']}, "carries no profiles"),
    ({"spans": {"include": {"match_type": "strict", "log_bodies": ["x"]}}}, "cannot match traces"),
    ({"logs": {"include": {"match_type": "strict", "severity_number": {"min": "LOUD"}}}}, "unknown severity"),
    ({"metrics": {"include": {"match_type": "expr", "metric_names": ["x"]}}}, "match_type"),
])
def test_invalid_filter_configs(config, message):
    with pytest.raises(ValidationError) as error:
        FilterConfig.model_validate(config)
    assert message in str(error.value)


@pytest.mark.parametrize("severity_number,kept", [
    ({"min": "13"}, ["warn", "error"]),  # otelcol's severity table holds "1" to "24" beside the names
    ({"match_undefined": True}, ["unset", "debug", "warn", "error"]),  # min unset or "": 0, every defined severity
    ({"min": "", "match_undefined": False}, ["debug", "warn", "error"]),
])
def test_severity_number_min_takes_every_spelling_otelcol_takes(severity_number, kept):
    processor = FilterProcessor("filter", FilterConfig.model_validate(
        {"logs": {"include": {"severity_number": severity_number}}}), Host())
    payload = payload_of(Signal.LOGS, log_request([
        {"body": "unset"}, {"body": "debug", "severity": 5}, {"body": "warn", "severity": 13},
        {"body": "error", "severity": 17}]))
    result = processor.process(payload)
    bodies = [r.body.string_value for rl in result.view().resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert bodies == kept


def _best_seconds(processor: FilterProcessor, request: Callable[[], ExportTraceServiceRequest]) -> tuple[float, int]:
    """CPU seconds of this thread (best of three) for `processor` on a payload of `request()` (parsed
    beforehand), and the items it left."""
    best, left = float("inf"), 0
    for _ in range(3):
        payload = payload_of(Signal.TRACES, request())
        payload.view()
        started = time.thread_time()
        result = processor.process(payload)
        best = min(best, time.thread_time() - started)
        left = result.items
    return best, left


def _drop_spans_seconds(config: dict, count: int, every: int) -> tuple[float, int]:
    """CPU seconds of this thread (best of three) to drop every `every`th span of one scope of `count`."""
    processor = FilterProcessor("filter", FilterConfig.model_validate(config), Host())
    return _best_seconds(processor, lambda: span_request([{"name": "y" if i % every else "x"} for i in range(count)]))


@pytest.mark.parametrize("every", [2, 65])
@pytest.mark.parametrize("config", [{"spans": {"exclude": {"match_type": "strict", "span_names": ["x"]}}},
                                    {"traces": {"span": ['name == "x"']}}], ids=["match properties", "OTTL"])
def test_dropping_many_spans_of_one_scope_takes_time_linear_in_their_number(config, every):
    # removing one at a time moved every span behind each: 8 times the spans took 19 times as long,
    # and a request of millions of tiny spans held the agent for many seconds
    small, _ = _drop_spans_seconds(config, 20_000, every)
    large, left = _drop_spans_seconds(config, 160_000, every)
    assert left == 160_000 - len(range(0, 160_000, every))
    assert large < 14 * small, (small, large)


def test_match_properties_remove_empty_scopes_and_resources_as_otelcol_does():
    # otelcol's filter removes every scope left without items and every resource without scopes,
    # whether or not it dropped anything from them; a request left with none stops
    processor = FilterProcessor("filter", FilterConfig.model_validate(
        {"spans": {"exclude": {"match_type": "strict", "span_names": ["nope"]}}}), Host())
    request = span_request([{"name": "a"}])
    request.resource_spans[0].scope_spans.add()
    request.resource_spans.add().scope_spans.add()
    result = processor.process(payload_of(Signal.TRACES, request))
    assert [[len(ss.spans) for ss in rs.scope_spans] for rs in result.view().resource_spans] == [[1]]
    assert ExportTraceServiceRequest.FromString(result.serialized()) == result.view()
    empty = ExportTraceServiceRequest()
    empty.resource_spans.add().scope_spans.add()
    assert processor.process(payload_of(Signal.TRACES, empty)) is None


def _two_resources_of_metrics_a_and_b():
    request = metric_request([{"name": "a"}, {"name": "b"}], resource=[("env", "dev")])
    request.resource_metrics.append(metric_request([{"name": "a"}, {"name": "b"}],
                                                   resource=[("env", "prod")]).resource_metrics[0])
    return request


@pytest.mark.parametrize("metrics,kept", [
    # otelcol builds two filters of a metrics block, one of resource_attributes over resources and
    # one of metric_names over metrics: an exclude drops what either matches
    ({"exclude": {"match_type": "strict", "metric_names": ["a"], "resource_attributes": [
        {"key": "env", "value": "dev"}]}}, [("prod", "b")]),
    # and an include keeps what both match
    ({"include": {"match_type": "strict", "metric_names": ["a"], "resource_attributes": [
        {"key": "env", "value": "dev"}]}}, [("dev", "a")]),
], ids=["exclude", "include"])
def test_metric_names_and_resource_attributes_of_a_block_filter_separately(metrics, kept):
    processor = FilterProcessor("filter", FilterConfig.model_validate({"metrics": metrics}), Host())
    result = processor.process(payload_of(Signal.METRICS, _two_resources_of_metrics_a_and_b()))
    assert [(rm.resource.attributes[0].value.string_value, m.name) for rm in result.view().resource_metrics
            for sm in rm.scope_metrics for m in sm.metrics] == kept


def _spans_of_a_large_resource_seconds(count: int) -> tuple[float, int]:
    """CPU seconds of this thread (best of three) to filter `count` spans under one resource of
    `count // 4` attributes by a resource attribute."""
    processor = FilterProcessor("filter", FilterConfig.model_validate(
        {"spans": {"exclude": {"match_type": "strict", "resources": [{"key": "env", "value": "dev"}],
                               "span_names": ["x"]}}}), Host())
    resource = [("env", "dev"), *((f"k{i}", i) for i in range(count // 4))]
    return _best_seconds(processor, lambda: span_request([{"name": "x" if i % 2 else "y"} for i in range(count)],
                                                         resource=resource))


def test_a_resource_with_many_attributes_is_matched_once_not_for_each_of_its_spans():
    # each span read every attribute of its resource again: 4 times the spans under a resource of 4
    # times the attributes took 16 times as long, and a request of 200 KB held the agent for 20 s
    small, _ = _spans_of_a_large_resource_seconds(1_000)
    large, left = _spans_of_a_large_resource_seconds(4_000)
    assert left == 2_000
    assert large < 8 * small, (small, large)
