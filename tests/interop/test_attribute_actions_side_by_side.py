"""The attributes and resource processors side by side with otelcol 0.165's: the same traces,
metrics and logs sent to a real edgeagent and a real otelcol with the same actions (and
include / exclude) leave the same attributes on every span, data point, log record and resource."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.processors.actions import to_any_value
from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

# values whose conversion, hashing or printing differs by type and by text
VALUES: dict[str, Any] = {
    "s": "text", "n": 42, "neg": -7, "d": 1.5, "big": 1e21, "tiny": 1e-7, "b": True, "m": {"k": "v", "i": 1},
    "l": [1, "two", 3.5], "hex": "0x1F", "sep": "1_000", "plus": "+5", "space": " 5", "exp": "1e3", "inf": "Inf",
    "nan": "NaN", "hexf": "0x1p-2", "path": "/api/v1/users/123", "empty": "",
}
ACTIONS: list[dict[str, Any]] = [
    {"key": "env", "value": "prod", "action": "insert"},
    {"key": "s", "value": "nope", "action": "insert"},
    {"key": "missing", "value": 1, "action": "update"},
    {"key": "n2", "from_attribute": "n", "action": "upsert"},
    {"key": "fallback", "from_attribute": "absent", "default_value": "dflt", "action": "upsert"},
    {"key": "obj", "value": {"a": [1, {"c": False}]}, "action": "upsert"},  # one key: Go orders maps at random
    {"key": "path", "pattern": "^/api/(?P<version>v\\d+)/(?P<resource>\\w+)(?:/(?P<id>\\d+))?", "action": "extract"},
    {"key": "s", "action": "hash"},
    {"key": "b", "action": "hash"},
    {"key": "neg", "action": "hash"},
    {"key": "m", "action": "hash"},
    {"pattern": "^ti", "action": "hash"},
    {"key": "d", "converted_type": "int", "action": "convert"},
    {"key": "hex", "converted_type": "int", "action": "convert"},
    {"key": "sep", "converted_type": "int", "action": "convert"},
    {"key": "plus", "converted_type": "int", "action": "convert"},
    {"key": "space", "converted_type": "double", "action": "convert"},
    {"key": "exp", "converted_type": "double", "action": "convert"},
    {"key": "inf", "converted_type": "double", "action": "convert"},
    {"key": "hexf", "converted_type": "double", "action": "convert"},
    {"key": "big", "converted_type": "string", "action": "convert"},
    {"key": "l", "converted_type": "string", "action": "convert"},
    {"key": "n", "converted_type": "double", "action": "convert"},
    {"key": "empty", "action": "delete"},
    {"pattern": "^na", "action": "delete"},
]
PROCESSORS: dict[str, Any] = {
    "attributes/all": {"actions": ACTIONS},
    "resource": {"attributes": [{"key": "host.name", "action": "hash"},
                                {"key": "deployment.environment", "value": "edge", "action": "upsert"},
                                {"key": "copied", "from_attribute": "service.name", "action": "insert"}]},
    "attributes/selected": {
        "include": {"match_type": "regexp", "services": ["^shop"], "attributes": [{"key": "route", "value": "^/a"}]},
        "exclude": {"match_type": "strict", "span_names": ["skip"]},
        "actions": [{"key": "selected", "value": True, "action": "upsert"}]},
    "attributes/logs": {
        "include": {"match_type": "regexp", "log_bodies": ["^keep"], "log_severity_texts": ["^W"]},
        "actions": [{"key": "selected", "value": True, "action": "upsert"}]},
    "attributes/metrics": {
        "include": {"match_type": "regexp", "metric_names": ["^req"]},
        "actions": [{"key": "selected", "value": True, "action": "upsert"}]},
}
CHAINS = {"traces": ["attributes/all", "resource", "attributes/selected"],
          "metrics": ["attributes/all", "resource", "attributes/metrics"],
          "logs": ["attributes/all", "resource", "attributes/logs"]}


def _kv(attributes: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        attributes.add(key=key).value.CopyFrom(to_any_value(value))


def _resource(resource: Any, service: str) -> None:
    _kv(resource.attributes, {"service.name": service, "host.name": "edge-1", "deployment.environment": "dev"})


def _traces() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for service in ("shop", "billing"):
        group = request.resource_spans.add()
        _resource(group.resource, service)
        scope = group.scope_spans.add()
        scope.scope.name = "lib"
        for number, (name, route) in enumerate((("a", "/a/1"), ("skip", "/a/2"), ("b", "/b"))):
            span = scope.spans.add(name=name, kind=2, trace_id=bytes([number + 1]) * 16,
                                   span_id=bytes([number + 1, len(service)]) * 4)
            _kv(span.attributes, {**VALUES, "route": route})
            span.attributes.add(key="raw").value.bytes_value = b"\x00\xff"
    return request


def _metrics() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    group = request.resource_metrics.add()
    _resource(group.resource, "shop")
    scope = group.scope_metrics.add()
    for name in ("requests", "latency"):
        metric = scope.metrics.add(name=name)
        _kv(metric.sum.data_points.add(as_int=1).attributes, VALUES)
        _kv(metric.sum.data_points.add(as_int=2).attributes, {"s": "other"})
    _kv(scope.metrics.add(name="req.hist").histogram.data_points.add(count=1).attributes, VALUES)
    return request


def _logs() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    group = request.resource_logs.add()
    _resource(group.resource, "shop")
    scope = group.scope_logs.add()
    for body, severity in (("keep this", "WARN"), ("keep that", "INFO"), ("drop", "WARN")):
        record = scope.log_records.add(severity_text=severity)
        record.body.string_value = body
        _kv(record.attributes, VALUES)
    return request


def _config(upstream: Upstream, endpoint: str, exporter: str) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": endpoint}}}},
        "processors": PROCESSORS,
        "exporters": {exporter: {"endpoint": upstream.url, "sending_queue": {"enabled": False}}},
        "service": {"pipelines": {signal: {"receivers": ["otlp"], "processors": chain, "exporters": [exporter]}
                                  for signal, chain in CHAINS.items()}},
    }


def _start_both(agents: Any, otelcol: Any, directory: Path, ours: Upstream, theirs: Upstream,
                processors: dict[str, Any], chains: dict[str, list[str]], queued: bool = False,
                env: dict[str, str] | None = None) -> tuple[int, int]:
    """edgeagent and otelcol with the same `processors`, each signal of `chains` through its chain;
    edgeagent's exporter with its sending queue when `queued` (as the guides run it). Their ports."""
    settings = _config(ours, "127.0.0.1:0", "otlp_http")
    settings["processors"] = processors
    settings["service"]["pipelines"] = {signal: {"receivers": ["otlp"], "processors": chain,
                                                 "exporters": ["otlp_http"]} for signal, chain in chains.items()}
    if queued:
        settings["exporters"]["otlp_http"] = {"endpoint": ours.url}
    settings["extensions"] = {"health_check": {}}  # the agent fixture waits for readiness
    settings["service"]["extensions"] = ["health_check"]
    config = directory / "agent.yaml"
    config.write_text(yaml.safe_dump(settings))
    agent = agents(["run", "--config", str(config), "--state-dir", str(directory / "state")], env=env)
    reference_port = free_port()
    reference = _config(theirs, f"127.0.0.1:{reference_port}", "otlphttp")
    reference["processors"] = processors
    reference["service"]["pipelines"] = {signal: {"receivers": ["otlp"], "processors": chain,
                                                  "exporters": ["otlphttp"]} for signal, chain in chains.items()}
    otelcol(reference)
    return agent.http_port, reference_port


def _send_each_signal(ports: tuple[int, int], upstreams: tuple[Upstream, Upstream],
                      metrics: ExportMetricsServiceRequest) -> None:
    """One request of each signal to both peers; returns once both upstreams hold all three."""
    for port in ports:
        assert post(port, _traces())[0] == 200
        assert post(port, metrics, "/v1/metrics")[0] == 200
        assert post(port, _logs(), "/v1/logs")[0] == 200
    wait_until(lambda: all(len(up.received(signal)) == 1 for up in upstreams
                           for signal in ("traces", "metrics", "logs")), timeout=20,
               message="one request of each signal upstream of both")


def _attributes(attributes: Any) -> dict[str, Any]:
    return {kv.key: MessageToDict(kv.value) for kv in attributes}


def _seen(upstream: Upstream) -> dict[str, list]:
    """Every resource's and record's attributes upstream, in the order they were sent."""
    seen: dict[str, list] = {"resources": [], "spans": [], "points": [], "logs": []}
    for received in upstream.received("traces"):
        for group in received.message.resource_spans:
            seen["resources"].append(_attributes(group.resource.attributes))
            seen["spans"] += [_attributes(span.attributes) for scope in group.scope_spans for span in scope.spans]
    for received in upstream.received("metrics"):
        for group in received.message.resource_metrics:
            seen["resources"].append(_attributes(group.resource.attributes))
            seen["points"] += [_attributes(point.attributes) for scope in group.scope_metrics
                               for metric in scope.metrics if metric.WhichOneof("data")
                               for point in getattr(metric, metric.WhichOneof("data")).data_points]
    for received in upstream.received("logs"):
        for group in received.message.resource_logs:
            seen["resources"].append(_attributes(group.resource.attributes))
            seen["logs"] += [_attributes(record.attributes) for scope in group.scope_logs
                             for record in scope.log_records]
    return seen


def test_the_same_attributes_leave_edgeagent_and_otelcol(agents, otelcol):
    ours, theirs = Upstream(free_port()).start(), Upstream(free_port()).start()
    try:
        with tempfile.TemporaryDirectory() as directory:
            ports = _start_both(agents, otelcol, Path(directory), ours, theirs, PROCESSORS, CHAINS)
            for port in ports:
                assert post(port, _traces())[0] == 200
                assert post(port, _metrics(), "/v1/metrics")[0] == 200
                assert post(port, _logs(), "/v1/logs")[0] == 200
            wait_until(lambda: all(len(up.received(signal)) == 1 for up in (ours, theirs)
                                   for signal in ("traces", "metrics", "logs")), timeout=20,
                       message="one request of each signal upstream of both")
        expected = _seen(theirs)
        got = _seen(ours)
        for kind in expected:
            for index, (mine, reference) in enumerate(zip(got[kind], expected[kind], strict=True)):
                assert mine == reference, (kind, index)
        # not vacuous: the selections picked some records and left others
        assert 0 < sum("selected" in span for span in expected["spans"]) < len(expected["spans"])
        assert 0 < sum("selected" in point for point in expected["points"]) < len(expected["points"])
        assert 0 < sum("selected" in record for record in expected["logs"]) < len(expected["logs"])
    finally:
        ours.stop()
        theirs.stop()


# what the deployment guides do: `value: ${env:...}`; the variable's text is typed as YAML would type it
ENV_VALUES = {"EA_DIGITS": "12345", "EA_ZEROS": "007", "EA_BOOL": "true", "EA_HEX": "0x1F", "EA_EXP": "1e3",
              "EA_UUID": "3f0c2a1e-9b7d-4c55-8e21-0a1b2c3d4e5f",
              "EA_LIST": "[a, b]", "EA_SPACE": " padded ", "EA_COLON": "a: b", "EA_FLOAT": "1.50"}


# an unset variable is no value (nil) to otelcol: default_value or another source takes its place
UNSET_VALUE_ACTIONS = [
    {"key": "with_default", "value": "${env:EA_UNSET}", "default_value": "fallback", "action": "upsert"},
    {"key": "with_attribute", "value": "${env:EA_UNSET}", "from_attribute": "s", "action": "upsert"},
    {"key": "with_empty", "value": "${env:EA_EMPTY}", "default_value": 7, "action": "insert"},
    {"key": "unset_default", "value": "set", "default_value": "${env:EA_UNSET}", "action": "upsert"},
]


def test_env_values_get_the_type_otelcol_gives_them(agents, otelcol, monkeypatch):
    monkeypatch.delenv("EA_UNSET", raising=False)
    for name, value in {**ENV_VALUES, "EA_EMPTY": ""}.items():
        monkeypatch.setenv(name, value)
    processors = {"attributes": {"actions": [{"key": name.lower(), "value": f"${{env:{name}}}", "action": "upsert"}
                                             for name in ENV_VALUES] + UNSET_VALUE_ACTIONS}}
    ours, theirs = Upstream(free_port()).start(), Upstream(free_port()).start()
    try:
        with tempfile.TemporaryDirectory() as directory:
            ports = _start_both(agents, otelcol, Path(directory), ours, theirs, processors,
                                {"traces": ["attributes"]}, env={**ENV_VALUES, "EA_EMPTY": ""})
            for port in ports:
                assert post(port, _traces())[0] == 200
            wait_until(lambda: all(len(up.received("traces")) == 1 for up in (ours, theirs)), timeout=20,
                       message="the traces upstream of both")
        expected = _seen(theirs)["spans"][0]
        got = _seen(ours)["spans"][0]
        keys = [*map(str.lower, ENV_VALUES), *(action["key"] for action in UNSET_VALUE_ACTIONS)]
        assert {key: got.get(key) for key in keys} == {key: expected.get(key) for key in keys}
    finally:
        ours.stop()
        theirs.stop()


SEED_ACTIONS = [{"key": "telemetryflow.workspace.id", "value": "ws-1", "action": "upsert"},
                {"key": "telemetryflow.tenant.id", "value": "tenant-1", "action": "upsert"},
                {"key": "edge.location", "value": "plant-7", "action": "upsert"}]


def _every_metric_type() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    group = request.resource_metrics.add()
    _resource(group.resource, "shop")
    scope = group.scope_metrics.add()
    _kv(scope.metrics.add(name="g").gauge.data_points.add(as_double=1.0).attributes, {"a": 1})
    scope.metrics.add(name="s").sum.data_points.add(as_int=2)
    _kv(scope.metrics.add(name="h").histogram.data_points.add(count=1).attributes, {"edge.location": "old"})
    scope.metrics.add(name="e").exponential_histogram.data_points.add(count=1)
    scope.metrics.add(name="q").summary.data_points.add(count=1)
    scope.metrics.add(name="empty")  # no data: no points to change
    return request


def test_the_seeds_constant_upserts_reach_upstream_as_otelcols_do(agents, otelcol, tmp_path):
    """The guides' `upsert` of constants on every signal, through the queue as edgeagent runs them."""
    ours, theirs = Upstream(free_port()).start(), Upstream(free_port()).start()
    try:
        processors = {"attributes": {"actions": SEED_ACTIONS}}
        ports = _start_both(agents, otelcol, tmp_path, ours, theirs, processors,
                            dict.fromkeys(CHAINS, ["attributes"]), queued=True)
        _send_each_signal(ports, (ours, theirs), _every_metric_type())
        expected, got = _seen(theirs), _seen(ours)
        assert got == expected
        assert all(point["edge.location"] == {"stringValue": "plant-7"} for point in expected["points"])
        assert len(expected["points"]) == 5
    finally:
        ours.stop()
        theirs.stop()


def test_processors_after_constant_upserts_see_the_upserted_attributes_as_in_otelcol(agents, otelcol, tmp_path):
    """A filter, a second attributes processor and a resource processor behind the guides' upserts
    act on what was upserted, in both."""
    ours, theirs = Upstream(free_port()).start(), Upstream(free_port()).start()
    try:
        processors = {
            "attributes/stamp": {"actions": SEED_ACTIONS},
            "filter": {"trace_conditions": ['span.attributes["edge.location"] == "plant-7" and span.name == "skip"'],
                       "metric_conditions": ['datapoint.attributes["edge.location"] == "plant-7" and '
                                             'metric.name == "s"'],
                       "log_conditions": ['log.attributes["edge.location"] == "plant-7" and log.body == "drop"']},
            "attributes/rework": {"actions": [{"key": "telemetryflow.tenant.id", "action": "hash"},
                                              {"key": "copy", "from_attribute": "edge.location", "action": "insert"},
                                              {"key": "telemetryflow.workspace.id", "action": "delete"}]},
        }
        chain = ["attributes/stamp", "filter", "attributes/rework"]
        ports = _start_both(agents, otelcol, tmp_path, ours, theirs, processors, dict.fromkeys(CHAINS, chain),
                            queued=True)
        _send_each_signal(ports, (ours, theirs), _every_metric_type())
        expected, got = _seen(theirs), _seen(ours)
        assert got == expected
        assert (len(expected["spans"]), len(expected["points"]), len(expected["logs"])) == (4, 4, 2)
    finally:
        ours.stop()
        theirs.stop()


# one marker per selection: each processor upserts its own key on what its include/exclude selects
SELECTIONS: dict[str, dict[str, Any]] = {
    "kinds": {"include": {"match_type": "regexp", "span_kinds": ["SERVER$"]}},
    "kinds_strict": {"exclude": {"match_type": "strict", "span_kinds": ["SPAN_KIND_CLIENT"]}},
    "service_strict": {"include": {"match_type": "strict", "services": ["billing"]}},
    "library_version": {"include": {"match_type": "regexp", "libraries": [{"name": "^li", "version": "^$"}]}},
    "library_strict": {"include": {"match_type": "strict", "libraries": [{"name": "lib", "version": "1.0"}]}},
    "resource_key": {"include": {"match_type": "strict", "resources": [{"key": "host.name"}]}},
    "resource_value": {"exclude": {"match_type": "regexp", "resources": [{"key": "service.name", "value": "^bill"}]}},
    "int_strict": {"include": {"match_type": "strict", "attributes": [{"key": "n", "value": 42}]}},
    "int_regexp": {"include": {"match_type": "regexp", "attributes": [{"key": "n", "value": "^4"}]}},
    "double_regexp": {"include": {"match_type": "regexp", "attributes": [{"key": "tiny", "value": "0\\.0000001"}]}},
    "bool_regexp": {"include": {"match_type": "regexp", "attributes": [{"key": "b", "value": "^true$"}]}},
    "map_strict": {"include": {"match_type": "strict", "attributes": [{"key": "m", "value": {"i": 1, "k": "v"}}]}},
    "list_regexp": {"include": {"match_type": "regexp", "attributes": [{"key": "l", "value": "two"}]}},
    "names_and_kinds": {
        "include": {"match_type": "strict", "span_names": ["a", "b"], "span_kinds": ["SPAN_KIND_SERVER"]},
        "exclude": {"match_type": "strict", "attributes": [{"key": "route", "value": "/b"}]}},
}


def test_each_selection_marks_the_same_spans_as_otelcols(agents, otelcol, tmp_path):
    ours, theirs = Upstream(free_port()).start(), Upstream(free_port()).start()
    try:
        processors = {f"attributes/{name}": {**selection, "actions": [{"key": f"picked.{name}", "value": True,
                                                                         "action": "upsert"}]}
                      for name, selection in SELECTIONS.items()}
        ports = _start_both(agents, otelcol, tmp_path, ours, theirs, processors, {"traces": list(processors)})
        request = _traces()
        request.resource_spans[1].scope_spans[0].scope.version = "1.0"
        request.resource_spans[0].scope_spans[0].spans[2].kind = 3
        for port in ports:
            assert post(port, request)[0] == 200
        wait_until(lambda: all(len(up.received("traces")) == 1 for up in (ours, theirs)), timeout=20,
                   message="the traces upstream of both")
        expected, got = _seen(theirs)["spans"], _seen(ours)["spans"]
        marks = {name: ([f"picked.{name}" in span for span in got], [f"picked.{name}" in span for span in expected])
                 for name in SELECTIONS}
        differing = {name: pair for name, pair in marks.items() if pair[0] != pair[1]}
        assert not differing
        assert got == expected
        picked = {name: sum(f"picked.{name}" in span for span in expected) for name in SELECTIONS}
        assert len(set(picked.values())) >= 4, str(picked)  # the selections pick different spans
    finally:
        ours.stop()
        theirs.stop()


LOG_SELECTIONS: dict[str, dict[str, Any]] = {
    "severity": {"include": {"match_type": "strict", "log_severity_number": {"min": 13}}},
    "undefined": {"include": {"match_type": "strict",
                              "log_severity_number": {"min": 13, "match_undefined": True}}},
    "bodies_strict": {"include": {"match_type": "strict", "log_bodies": ["keep this", "7"]}},
    "bodies_regexp": {"include": {"match_type": "regexp", "log_bodies": ["\\{\"msg\":", "^7$"]}},
    "texts": {"exclude": {"match_type": "regexp", "log_severity_texts": ["^$"]}},
    "library": {"include": {"match_type": "strict", "libraries": [{"name": "logger"}]}},
}


def _mixed_logs() -> ExportLogsServiceRequest:
    request = _logs()
    group = request.resource_logs.add()
    _resource(group.resource, "billing")
    scope = group.scope_logs.add()
    scope.scope.name = "logger"
    scope.log_records.add(severity_number=0).body.int_value = 7
    _kv(scope.log_records.add(severity_number=17, severity_text="ERROR").body.kvlist_value.values, {"msg": "x"})
    scope.log_records.add(severity_number=9).body.string_value = "keep this"
    request.resource_logs[0].scope_logs[0].log_records[0].severity_number = 13
    return request


def test_each_log_selection_marks_the_same_records_as_otelcols(agents, otelcol, tmp_path):
    ours, theirs = Upstream(free_port()).start(), Upstream(free_port()).start()
    try:
        processors = {f"attributes/{name}": {**selection, "actions": [{"key": f"picked.{name}", "value": True,
                                                                         "action": "upsert"}]}
                      for name, selection in LOG_SELECTIONS.items()}
        ports = _start_both(agents, otelcol, tmp_path, ours, theirs, processors, {"logs": list(processors)})
        for port in ports:
            assert post(port, _mixed_logs(), "/v1/logs")[0] == 200
        wait_until(lambda: all(len(up.received("logs")) == 1 for up in (ours, theirs)), timeout=20,
                   message="the logs upstream of both")
        expected, got = _seen(theirs)["logs"], _seen(ours)["logs"]
        marks = {name: ([f"picked.{name}" in record for record in got],
                        [f"picked.{name}" in record for record in expected]) for name in LOG_SELECTIONS}
        assert not {name: pair for name, pair in marks.items() if pair[0] != pair[1]}
        assert got == expected
        picked = {name: sum(f"picked.{name}" in record for record in expected) for name in LOG_SELECTIONS}
        assert all(0 < count < len(expected) for count in picked.values()), str(picked)
    finally:
        ours.stop()
        theirs.stop()
