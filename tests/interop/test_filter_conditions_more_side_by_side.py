"""More OTTL conditions side by side with otelcol 0.165: numbers across int and double, status,
ids as text, converters over non-string values, and map bodies; each pipeline (one condition)
must leave the same items upstream of a real edgeagent and a real otelcol."""

from __future__ import annotations

from tests.interop.test_filter_conditions_side_by_side import side_by_side
from tests.interop.test_filter_side_by_side import _edge_logs

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


def test_each_further_condition_leaves_the_same_items_in_edgeagent_and_otelcol(agents, otelcol):
    side_by_side(agents, otelcol, CONDITIONS, _edge_logs)
