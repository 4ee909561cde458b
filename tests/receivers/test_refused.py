"""What a refused request's items are counted as, and how many refused bodies are read at once."""

from __future__ import annotations

import contextlib
import json

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from edgeagent.receivers import codec, refused
from edgeagent.signals import Signal
from otel.otlpjson import to_otlp_json


def _metrics() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    for number in range(4):
        scope.metrics.add(name="sum").sum.data_points.add(as_int=number)
    scope.metrics.add(name="h").histogram.data_points.add(count=5, bucket_counts=[2, 3])
    scope.metrics.add(name="none").gauge.SetInParent()  # a metric without points counts none
    return request


def test_data_points_are_counted_as_otelcol_counts_them_in_protobuf_and_json():
    request = _metrics()
    assert refused.items(Signal.METRICS, request.SerializeToString(), codec.PROTOBUF) == 5
    body = json.dumps(to_otlp_json(request)).encode()
    assert refused.items(Signal.METRICS, body, codec.JSON) == 5


def test_a_body_that_is_no_request_counts_nothing():
    assert refused.items(Signal.TRACES, b"\x0a\xff\xff\xff", codec.PROTOBUF) == 0
    assert refused.items(Signal.TRACES, b"{not json", codec.JSON) == 0


def test_refused_bodies_are_read_within_the_budget_and_give_it_back():
    held = refused.BUDGET_BYTES // refused.COUNTED_BYTES
    with contextlib.ExitStack() as stack:
        assert all(stack.enter_context(refused.budget(refused.COUNTED_BYTES)) for _ in range(held))
        with refused.budget(1) as allowed:
            assert not allowed
    with refused.budget(refused.COUNTED_BYTES) as allowed:
        assert allowed
