"""Splitting requests into parts of at most N items: spans, log records and metric data points."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from edgeagent.signals import Signal, count_items, split_request


def _metrics() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    total = scope.metrics.add(name="requests", unit="1")
    total.sum.is_monotonic = True
    total.sum.aggregation_temporality = 2
    for index in range(7):
        total.sum.data_points.add(as_int=index)
    scope.metrics.add(name="temperature").gauge.data_points.add(as_double=21.5)
    return request


@pytest.mark.parametrize("max_items", [1, 2, 3, 7])
def test_one_metric_with_more_points_than_fit_is_split_by_data_points(max_items):
    parts = split_request(Signal.METRICS, _metrics(), max_items)
    assert all(0 < count_items(Signal.METRICS, part) <= max_items for part in parts)
    points, names = [], []
    for part in parts:
        for metric in part.resource_metrics[0].scope_metrics[0].metrics:
            names.append(metric.name)
            if metric.name == "requests":
                assert metric.sum.is_monotonic and metric.sum.aggregation_temporality == 2 and metric.unit == "1"
                points += [point.as_int for point in metric.sum.data_points]
    assert points == list(range(7)) and names.count("temperature") == 1


def test_halving_always_makes_progress_down_to_single_items():
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for index in range(5):
        scope.log_records.add().body.string_value = str(index)
    halves = split_request(Signal.LOGS, request, 3)
    assert [count_items(Signal.LOGS, half) for half in halves] == [3, 2]
    single = split_request(Signal.METRICS, _metrics(), 1)
    assert len(single) == 8
