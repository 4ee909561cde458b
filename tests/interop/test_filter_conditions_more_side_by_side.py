"""More OTTL conditions side by side with otelcol 0.165: numbers across int and double, status,
ids as text, converters over non-string values, and map bodies; each pipeline (one condition)
must leave the same items upstream of a real edgeagent and a real otelcol."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream
from tests.interop.test_filter_side_by_side import _edge_logs, _metrics, _survivors, _traces

CONDITIONS: dict[str, list[str]] = {
    "traces": [
        'span.kind == 2.0',
        'IsMatch(span.kind, "2")',
        'span.status.code == STATUS_CODE_UNSET',
        'span.parent_span_id.string == ""',
        'span.attributes["list"][0] == "a"',
        'not (span.name == "call")',
        'span.name != nil and span.name < "d"',
        'IsString(span.name) and IsInt(span.kind)',
        'resource.attributes["missing"] != nil',
        'span.end_time_unix_nano == 0 and span.name == "healthz"',
        'IsMatch(span.attributes["list"], "a")',
        'span.attributes["user"] == span.attributes["user"]',
        'ToLowerCase(scope.name) == "noisy.lib" and span.kind != SPAN_KIND_SERVER',
    ],
    "metrics": [
        "datapoint.value_int == 3.0",
        "datapoint.value_double > 0",
        'IsMatch(datapoint.attributes["state"], "^i")',
        'datapoint.flags == 0 and metric.name == "latency"',
        'Len(datapoint.attributes) == 0',
        'metric.type == METRIC_DATA_TYPE_GAUGE',
        'metric.aggregation_temporality == AGGREGATION_TEMPORALITY_UNSPECIFIED and metric.type == METRIC_DATA_TYPE_SUM',
        'datapoint.start_time_unix_nano == 0 and datapoint.time_unix_nano == 1',
    ],
    "logs": [
        'log.body["msg"] == "fine"',
        'IsMatch(log.body, "secret")',
        'IsMap(log.body)',
        'log.body == 7',
        'log.body.string == "{\\"msg\\":\\"fine\\"}"',
        'Len(log.body) == 1',
        'log.severity_number >= 13 and log.severity_number <= 17',
        'IsMatch(String(log.severity_number), "^1")',
        'log.flags == 0 and log.observed_time_unix_nano == 0 and log.body == "drop me"',
        'log.dropped_attributes_count == 0 and Len(log.attributes) > 0',
    ],
}
PIPELINES = [(signal, index) for signal, conditions in CONDITIONS.items() for index in range(len(conditions))]


def _name(signal: str, index: int) -> str:
    return f"{signal}/{index}"


def _config(upstreams: dict[str, Upstream], exporter: str, endpoint: str) -> dict[str, Any]:
    key = {"traces": "trace_conditions", "metrics": "metric_conditions", "logs": "log_conditions"}
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": endpoint}}}},
        "processors": {f"filter/{signal}{index}": {key[signal]: [CONDITIONS[signal][index]]}
                       for signal, index in PIPELINES},
        "exporters": {f"{exporter}/{signal}{index}": {"endpoint": upstreams[_name(signal, index)].url,
                                                      "sending_queue": {"enabled": False}}
                      for signal, index in PIPELINES},
        "service": {"pipelines": {_name(signal, index): {
            "receivers": ["otlp"], "processors": [f"filter/{signal}{index}"],
            "exporters": [f"{exporter}/{signal}{index}"]} for signal, index in PIPELINES}},
    }


def test_each_further_condition_leaves_the_same_items_in_edgeagent_and_otelcol(agents, otelcol):
    ours = {_name(*pipeline): Upstream(free_port()).start() for pipeline in PIPELINES}
    theirs = {_name(*pipeline): Upstream(free_port()).start() for pipeline in PIPELINES}
    try:
        with tempfile.TemporaryDirectory() as directory:
            config = _config(ours, "otlp_http", "127.0.0.1:0")
            config["extensions"] = {"health_check": {}}
            config["service"]["extensions"] = ["health_check"]
            path = Path(directory) / "agent.yaml"
            path.write_text(yaml.safe_dump(config))
            agent = agents(["run", "--config", str(path)])
            port = free_port()
            otelcol(_config(theirs, "otlphttp", f"127.0.0.1:{port}"))
            for target in (agent.http_port, port):
                assert post(target, _traces())[0] == 200
                assert post(target, _metrics(), "/v1/metrics")[0] == 200
                assert post(target, _edge_logs(), "/v1/logs")[0] == 200
            wait_until(lambda: sum(len(up.requests) for up in theirs.values())
                       == sum(len(up.requests) for up in ours.values()) > 0, timeout=20,
                       message="as many requests upstream of both")
            differing = {}
            for name in ours:
                mine, reference = _survivors(ours[name]), _survivors(theirs[name])
                if mine != reference:
                    differing[name] = (CONDITIONS[name.split("/")[0]][int(name.split("/")[1])], mine, reference)
            assert not differing
            kept = [sum(len(items) for items in _survivors(up).values()) for up in theirs.values()]
            assert len(set(kept)) > 5, kept  # the conditions select different items
    finally:
        for upstream in [*ours.values(), *theirs.values()]:
            upstream.stop()
