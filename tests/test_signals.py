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


def _flat(signal: Signal, requests: list) -> list[tuple[bytes, bytes, bytes]]:
    """Each item with its resource and scope, in order, across the requests."""
    shape = signal.shape
    out = []
    for request in requests:
        for group in shape.groups_of(request):
            for scope in shape.scopes_of(group):
                if signal is Signal.METRICS:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        shell = type(metric)()
                        shell.CopyFrom(metric)
                        if kind is not None:
                            del getattr(shell, kind).data_points[:]
                        points = getattr(metric, kind).data_points if kind is not None else [None]
                        out += [(group.resource.SerializeToString() + group.schema_url.encode(),
                                 scope.scope.SerializeToString() + scope.schema_url.encode(),
                                 shell.SerializeToString(deterministic=True)
                                 + (point.SerializeToString() if point is not None else b""))
                                for point in points]
                else:
                    out += [(group.resource.SerializeToString() + group.schema_url.encode(),
                             scope.scope.SerializeToString() + scope.schema_url.encode(),
                             item.SerializeToString()) for item in shape.items_of(scope)]
    return out


def _item(signal: Signal, rng, name: str) -> bytes:
    """A span, a log record, or a metric (mostly a sum of up to 11 points, its temporality first)."""
    from otel.wire import length_delimited

    if signal is Signal.LOGS:
        return length_delimited(5, length_delimited(1, name.encode()))
    if signal is Signal.TRACES:
        return length_delimited(1, name.encode().ljust(16, b"-")) + length_delimited(5, b"op")
    metric = length_delimited(1, name.encode())
    if rng.random() < 0.8:
        points = b"".join(length_delimited(1, b"\x31" + bytes([p] * 8)) for p in range(rng.randrange(0, 12)))
        metric += length_delimited(7, b"\x10\x02" + points + b"\x18\x01")
    return metric


def _random_request(signal: Signal, rng) -> bytes:
    """Several groups and scopes, a scope field written between items, a resource after its scopes."""
    from otel.wire import length_delimited

    body = b""
    for g in range(rng.randrange(1, 4)):
        group = b""
        for s in range(rng.randrange(0, 4)):
            items = [length_delimited(2, _item(signal, rng, f"{g}.{s}.{i}")) for i in range(rng.randrange(0, 9))]
            cut_at = rng.randrange(0, len(items) + 1)
            scope = b"".join(items[:cut_at]) + length_delimited(1, length_delimited(1, f"scope{s}".encode()))
            scope += b"".join(items[cut_at:]) + length_delimited(3, b"https://schema")
            group += length_delimited(2, scope)
        resource = length_delimited(1, length_delimited(1, b"service.name")
                                    + length_delimited(2, length_delimited(1, f"svc{g}".encode())))
        body += length_delimited(1, group + length_delimited(1, resource))
    return body


@pytest.mark.parametrize("signal", list(Signal))
def test_cutting_bytes_gives_the_items_of_the_message_split_in_order_within_the_limit(signal: Signal) -> None:
    import random

    from edgeagent.signals import split_serialized

    rng = random.Random(11)
    for _ in range(150):
        body = _random_request(signal, rng)
        request = signal.request_class.FromString(body)
        total = count_items(signal, request)
        max_items = rng.randrange(1, max(2, total + 2))
        parts = split_serialized(signal, body, max_items)
        parsed = [signal.request_class.FromString(part) for part, _ in parts]
        assert [items for _, items in parts] == [count_items(signal, part) for part in parsed]
        assert all(items <= max_items for _, items in parts)
        assert sum(items for _, items in parts) == total
        assert _flat(signal, parsed) == _flat(signal, [request])  # every item, in order, with its resource and scope
        assert _flat(signal, split_request(signal, request, max_items)) == _flat(signal, [request])


def _single(signal: Signal, part: bytes) -> bool:
    """Whether a part holds one item (for metrics: one metric, whatever its points), which no cut makes smaller."""
    request = signal.request_class.FromString(part)
    if signal is not Signal.METRICS:
        return count_items(signal, request) == 1
    return sum(len(scope.metrics) for group in request.resource_metrics for scope in group.scope_metrics) == 1 \
        and count_items(signal, request) <= 1


@pytest.mark.parametrize("signal", list(Signal))
def test_cutting_bytes_by_size_gives_the_items_in_order_in_parts_within_the_size(signal: Signal) -> None:
    import random

    from edgeagent.signals import split_serialized

    rng = random.Random(12)
    for _ in range(150):
        body = _random_request(signal, rng)
        request = signal.request_class.FromString(body)
        max_bytes = rng.randrange(1, max(2, len(body) + 40))
        parts = split_serialized(signal, body, 1 << 30, max_bytes=max_bytes)
        parsed = [signal.request_class.FromString(part) for part, _ in parts]
        assert [items for _, items in parts] == [count_items(signal, part) for part in parsed]
        # within the size, but for the tags, lengths and headers of a group, a scope and a metric
        assert all(len(part) <= max_bytes + 120 or _single(signal, part) for part, _ in parts), max_bytes
        assert _flat(signal, parsed) == _flat(signal, [request])

def test_cutting_a_record_of_millions_of_empty_spans_takes_about_its_own_size() -> None:
    """The sender cuts a lease larger than send_batch_max_size: parsing a body of 1M empty spans
    and building the parts took about 350 MiB, outside the memory limiter's budget."""
    import subprocess
    import sys

    script = """
from otel.wire import length_delimited
from edgeagent.signals import Signal, split_serialized
def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key + ":")).split()[1]) << 10
body = length_delimited(1, length_delimited(2, b"\\x12\\x00" * 1_000_000))
before = status("VmRSS")
parts = split_serialized(Signal.TRACES, body, 16384)
assert sum(items for _, items in parts) == 1_000_000 and len(parts) == 62
print(status("VmHWM"), before)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    peak, before = map(int, done.stdout.split())
    assert peak - before < 32 << 20, (peak - before) >> 20  # the body is 2 MiB


@pytest.mark.parametrize("signal", list(Signal))
def test_merging_bytes_gives_what_merging_the_parsed_requests_gives(signal: Signal) -> None:
    """The sender merges a lease's records on their bytes (otel/merge.py): the same groups, scopes and
    items, in the same order, as moving the parsed messages' items into one, whatever the order of
    the fields around them."""
    import random

    from edgeagent.signals import merge_parsed, merge_requests

    rng = random.Random(13)
    for _ in range(150):
        parts = [_random_request(signal, rng) for _ in range(rng.randrange(2, 6))]
        merged = signal.request_class.FromString(merge_requests(signal, parts))
        assert merged == signal.request_class.FromString(merge_parsed(signal, parts))
        # every item with its resource and scope, none lost or doubled
        assert sorted(_flat(signal, [merged])) == sorted(_flat(signal, [signal.request_class.FromString(part)
                                                                        for part in parts]))
        resources = [group.resource.SerializeToString() for group in signal.shape.groups_of(merged)]
        assert len(resources) == len(set(resources))  # a resource's items in one group


@pytest.mark.parametrize("cut_at", [1, 3, 20])
def test_merging_a_record_cut_short_falls_back_to_the_parse_and_its_error(cut_at: int) -> None:
    from google.protobuf.message import DecodeError

    from edgeagent.signals import merge_requests

    good = _random_request(Signal.TRACES, __import__("random").Random(14))
    with pytest.raises(DecodeError):
        merge_requests(Signal.TRACES, [good, good[:-cut_at]])


def test_a_span_field_of_another_wire_type_is_merged_as_protobuf_reads_it_not_passed_on() -> None:
    """protobuf reads a field of the wrong wire type as an unknown field and drops it on the way out; the
    byte walk would have sent the bytes on, so it refuses them and the message merge takes over."""
    from edgeagent.signals import merge_parsed, merge_requests
    from otel.wire import length_delimited

    good = _random_request(Signal.TRACES, __import__("random").Random(15))
    bad = length_delimited(1, length_delimited(2, b"\x10\x05"))  # ScopeSpans.spans as a varint
    merged = merge_requests(Signal.TRACES, [good, bad])
    assert merged == merge_parsed(Signal.TRACES, [good, bad])
    assert b"\x10\x05" not in merged
