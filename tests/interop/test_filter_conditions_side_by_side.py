"""OTTL conditions evaluated side by side: one pipeline per condition in a real edgeagent and a
real otelcol 0.165, both fed the same traces, metrics and logs; every pipeline must leave the
same items upstream in both. Covers OTTL's comparison rules across types, nil, converters and
each context's fields on the kinds of item where they are nil."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream
from tests.interop.test_filter_side_by_side import _logs, _metrics, _survivors, _traces

CONDITIONS: dict[str, list[str]] = {
    "traces": [
        'span.attributes["user"] == nil',
        'span.attributes["user"] != "ann"',
        'span.attributes["user"] > "b"',  # strings order
        "span.kind >= 2",
        'span.kind.string == "Client"',
        'IsString(span.attributes["list"])',
        'Len(span.attributes["list"]) == 2',
        'span.name == "call" or span.attributes["user"] == 1',  # a type mismatch is false, not an error
        'HasPrefix(span.name, "GET") and resource.attributes["env"] == "prod"',
        'Concat([span.name, scope.name], "@") == "healthz@noisy.lib"',
        'ToUpperCase(span.name) == "CRAWL"',
        'spanevent.name == "retry" and span.kind == SPAN_KIND_SERVER',
        'Int(span.attributes["user"]) == nil',  # Int of a non-number string is nil
    ],
    "metrics": [
        "datapoint.value_int >= 5",
        "datapoint.value_double == 0.0",
        "datapoint.count == 2",
        "datapoint.sum > 1.0",
        "metric.aggregation_temporality == nil",
        'metric.is_monotonic == false',
        'datapoint.attributes["state"] == "used" and metric.name == "db.connections"',
        'HasAttrKeyOnDatapoint("state") and metric.type == METRIC_DATA_TYPE_SUM',
        'metric.name != "requests" and metric.unit == ""',
    ],
    "logs": [
        "log.severity_number == SEVERITY_NUMBER_ERROR",
        'log.severity_text == ""',
        'IsMatch(log.body, "^[a-d]")',
        'log.body.string == "disk full"',
        'log.attributes["drop"] != nil',
        'log.attributes["drop"] == false',
        'Len(log.body) > 8',
        'log.body > "keep"',
        'log.trace_id.string == "00000000000000000000000000000000"',
    ],
}
Conditions = dict[str, list[str]]


def _name(signal: str, index: int) -> str:
    return f"{signal}/{index}"


def _pipelines(conditions: Conditions) -> list[tuple[str, int]]:
    return [(signal, index) for signal, listed in conditions.items() for index in range(len(listed))]


def _config(conditions: Conditions, upstreams: dict[str, Upstream], exporter: str, endpoint: str) -> dict[str, Any]:
    key = {"traces": "trace_conditions", "metrics": "metric_conditions", "logs": "log_conditions"}
    pipelines = _pipelines(conditions)
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": endpoint}}}},
        "processors": {f"filter/{signal}{index}": {key[signal]: [conditions[signal][index]]}
                       for signal, index in pipelines},
        "exporters": {f"{exporter}/{signal}{index}": {"endpoint": upstreams[_name(signal, index)].url,
                                                      "sending_queue": {"enabled": False}}
                      for signal, index in pipelines},
        "service": {"pipelines": {_name(signal, index): {
            "receivers": ["otlp"], "processors": [f"filter/{signal}{index}"],
            "exporters": [f"{exporter}/{signal}{index}"]} for signal, index in pipelines}},
    }


def side_by_side(agents: Any, otelcol: Any, conditions: Conditions, logs: Callable[[], Any]) -> None:
    """One pipeline per condition in both; the same traces, metrics and `logs()` into each; every
    pipeline must leave the same items upstream of both."""
    pipelines = _pipelines(conditions)
    ours = {_name(*pipeline): Upstream(free_port()).start() for pipeline in pipelines}
    theirs = {_name(*pipeline): Upstream(free_port()).start() for pipeline in pipelines}
    try:
        with tempfile.TemporaryDirectory() as directory:
            config = _config(conditions, ours, "otlp_http", "127.0.0.1:4318")
            config["extensions"] = {"health_check": {}}
            config["service"]["extensions"] = ["health_check"]
            path = Path(directory) / "agent.yaml"
            path.write_text(yaml.safe_dump(config))
            agent = agents(["run", "--config", str(path)])
            port = free_port()
            otelcol(_config(conditions, theirs, "otlphttp", f"127.0.0.1:{port}"))
            for target in (agent.http_port, port):
                assert post(target, _traces())[0] == 200
                assert post(target, _metrics(), "/v1/metrics")[0] == 200
                assert post(target, logs(), "/v1/logs")[0] == 200
            # a pipeline whose filter drops everything sends nothing: wait for the others, then settle
            wait_until(lambda: sum(len(up.requests) for up in theirs.values())
                       == sum(len(up.requests) for up in ours.values()) > 0, timeout=20,
                       message="as many requests upstream of both")
            differing = {}
            for name in ours:
                mine, reference = _survivors(ours[name]), _survivors(theirs[name])
                if mine != reference:
                    differing[name] = (conditions[name.split("/")[0]][int(name.split("/")[1])], mine, reference)
            assert not differing
            kept = [sum(len(items) for items in _survivors(up).values()) for up in theirs.values()]
            assert len(set(kept)) > 5, kept  # the conditions select different items
    finally:
        for upstream in [*ours.values(), *theirs.values()]:
            upstream.stop()


def test_each_condition_leaves_the_same_items_in_edgeagent_and_otelcol(agents, otelcol):
    side_by_side(agents, otelcol, CONDITIONS, _logs)
