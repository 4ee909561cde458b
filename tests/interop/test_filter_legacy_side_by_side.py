"""The filter processor's older include / exclude match properties side by side with otelcol
0.165's: the same traces, metrics and logs leave the same items upstream of a real edgeagent and
a real otelcol, for strict and regexp matching of every property each signal takes."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest

from tests.helpers.net import wait_until
from tests.helpers.otlp_post import post
from tests.interop.test_filter_side_by_side import _logs, _metrics, _pair, _survivors, _traces

CASES: dict[str, dict[str, Any]] = {
    "spans-strict": {"spans": {
        "include": {"match_type": "strict", "services": ["shop"], "span_kinds": ["SPAN_KIND_SERVER"]},
        "exclude": {"match_type": "strict", "span_names": ["healthz"], "resources": [{"key": "env", "value": "dev"}]}}},
    "spans-regexp": {"spans": {
        "include": {"match_type": "regexp", "span_names": ["^(GET|call)"], "libraries": [{"name": "^shop"}]},
        "exclude": {"match_type": "regexp", "attributes": [{"key": "http.route", "value": "internal"}]}}},
    "spans-attribute-keys": {"spans": {"exclude": {"match_type": "strict", "attributes": [{"key": "user"}]}}},
    "spans-list-value": {"spans": {"exclude": {"match_type": "strict",
                                               "attributes": [{"key": "list", "value": ["a", "b"]}]}}},
    "logs-strict": {"logs": {
        "include": {"match_type": "strict", "severity_number": {"min": "WARN", "match_undefined": True}},
        "exclude": {"match_type": "strict", "bodies": ["disk full"],
                    "record_attributes": [{"key": "drop", "value": True}]}}},
    "logs-regexp": {"logs": {
        "exclude": {"match_type": "regexp", "bodies": ["pass", "^debug"], "severity_texts": [""]}}},
    "logs-record-attributes": {"logs": {"exclude": {"match_type": "regexp",
                                                    "record_attributes": [{"key": "drop", "value": "true"}]}}},
    "metrics-strict": {"metrics": {
        "include": {"match_type": "strict", "metric_names": ["db.connections", "latency", "requests"]},
        "exclude": {"match_type": "strict", "resource_attributes": [{"key": "service.name", "value": "nope"}]}}},
    "metrics-regexp": {"metrics": {
        "exclude": {"match_type": "regexp", "metric_names": ["^debug", "idle$"]}}},
    "metrics-resource": {"metrics": {
        "include": {"match_type": "regexp", "metric_names": ["^(db|flag)"],
                    "resource_attributes": [{"key": "service.name", "value": "^sh"}]}}},
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_same_items_survive_the_match_properties_in_both(agents, otelcol, name):
    with tempfile.TemporaryDirectory() as directory:
        ours, theirs, agent, reference_port = _pair(agents, otelcol, directory, CASES[name])
        try:
            for port in (agent.http_port, reference_port):
                assert post(port, _traces())[0] == 200
                assert post(port, _metrics(), "/v1/metrics")[0] == 200
                assert post(port, _logs(), "/v1/logs")[0] == 200
            signal = next(iter(CASES[name]))
            wire = {"spans": "traces"}.get(signal, signal)
            wait_until(lambda: all(len(up.received(wire)) == 1 for up in (ours, theirs)), timeout=20,
                       message="the filtered signal upstream of both")
            wait_until(lambda: all(len(up.received(other)) == 1 for up in (ours, theirs)
                                   for other in ("traces", "metrics", "logs") if other != wire), timeout=20,
                       message="the other signals upstream of both")
            expected = _survivors(theirs)
            assert _survivors(ours) == expected
            sent = {"spans": 24, "metrics": 6, "logs": 7}[signal]
            assert 0 < len(expected[signal]) < sent, expected[signal]  # the filter dropped some, kept some
        finally:
            ours.stop()
            theirs.stop()


def test_blocks_that_name_nothing_keep_every_log_and_metric_in_both(agents, otelcol):
    """otelcol builds no filter of a logs or metrics block that names nothing to match (an empty
    include keeps everything); edgeagent refused such a config."""
    settings = {"logs": {"include": {"match_type": "strict"}, "exclude": {"match_type": "regexp"}},
                "metrics": {"include": {"match_type": "strict"}, "exclude": {"match_type": "regexp"}}}
    with tempfile.TemporaryDirectory() as directory:
        ours, theirs, agent, reference_port = _pair(agents, otelcol, directory, settings)
        try:
            for port in (agent.http_port, reference_port):
                assert post(port, _metrics(), "/v1/metrics")[0] == 200
                assert post(port, _logs(), "/v1/logs")[0] == 200
            wait_until(lambda: all(len(up.received(signal)) == 1 for up in (ours, theirs)
                                   for signal in ("metrics", "logs")), timeout=20,
                       message="the metrics and logs upstream of both")
            expected = _survivors(theirs)
            assert _survivors(ours) == expected
            assert (len(expected["metrics"]), len(expected["logs"])) == (6, 7)
        finally:
            ours.stop()
            theirs.stop()


def test_an_unset_variable_as_an_attribute_value_matches_on_the_key_alone_in_both(agents, otelcol, monkeypatch):
    """`value: ${env:X}` with X unset is no value to otelcol: the attribute's presence decides."""
    monkeypatch.delenv("EA_UNSET_MATCH", raising=False)
    settings = {"spans": {"exclude": {"match_type": "strict",
                                      "attributes": [{"key": "user", "value": "${env:EA_UNSET_MATCH}"}]}}}
    with tempfile.TemporaryDirectory() as directory:
        ours, theirs, agent, reference_port = _pair(agents, otelcol, directory, settings)
        try:
            for port in (agent.http_port, reference_port):
                assert post(port, _traces())[0] == 200
            wait_until(lambda: all(len(up.received("traces")) == 1 for up in (ours, theirs)), timeout=20,
                       message="the traces upstream of both")
            expected = _survivors(theirs)
            assert _survivors(ours) == expected
            assert 0 < len(expected["spans"]) < 24
        finally:
            ours.stop()
            theirs.stop()
