"""The agent's own metrics as one OTLP metrics request, for a periodic reader to push.

The registry is the one the prometheus reader serves (edgeagent.extensions.metrics); what it
renders as text is built here as otelcol 0.165 pushes its own: counters as monotonic sums
(without `_total`; item counts as integers), observed counters too, gauges as gauges (but
`otelcol_exporter_in_flight_requests`, an up-down counter there), histograms with their explicit
bounds, each with otelcol's instrument name and unit. Names and labels keep the Prometheus
spelling but where OpenTelemetry's has dots, which come back (`http.server.request.duration`,
`otelcol_processor_filter_spans.filtered`, `server.address`); empty label values are left out, as
otelcol leaves the attribute out. The resource is target_info's (`service.name`,
`service.instance.id`, `service.version` and service::telemetry::resource's).

Cumulative points start when the registry was made. With delta temporality a point covers the
time since the last push that was delivered (`Snapshot.delivered`), so a failed push loses nothing:
the next one carries its increase too. Counters and histograms that did not move are left out
then, as the SDK leaves out a delta series without measurements.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from edgeagent import __version__
from edgeagent.extensions.metrics import Counter, Derived, Gauge, Histogram, Metrics

SCOPE = "edgeagent"
_CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
_DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
# semantic-convention attributes, which Prometheus labels carry with underscores; the int-valued ones
_DOTTED = {label: label.replace("_", ".") for label in (
    "server_address", "server_port", "url_path", "url_scheme", "otel_signal", "error_type", "http_route",
    "http_request_method", "network_protocol_name", "network_protocol_version", "rpc_method", "rpc_system_name")}
_DOTTED.update(http_response_status_code="http.response.status_code",
               rpc_response_status_code="rpc.response.status_code")
_INTEGERS = frozenset(("server.port", "http.response.status_code"))
# instrument names with dots, which Prometheus serves with underscores
_NAMES = {name.replace(".", "_"): name for name in (
    "http.server.request.duration", "http.client.request.duration", "rpc.server.call.duration",
    "rpc.client.call.duration", "otelcol_processor_filter_spans.filtered", "otelcol_processor_filter_logs.filtered",
    "otelcol_processor_filter_datapoints.filtered")}
_UP_DOWN = frozenset(("otelcol_exporter_in_flight_requests",))  # gauges here, up-down counters in otelcol
_TAIL = "otelcol_processor_tail_sampling_"
_UNITS = {
    "otelcol_process_uptime": "s", "otelcol_process_cpu_seconds": "s", "otelcol_process_memory_rss": "By",
    "otelcol_process_runtime_heap_alloc_bytes": "By", "otelcol_process_runtime_total_sys_memory_bytes": "By",
    "otelcol_processor_incoming_items": "{item}", "otelcol_processor_outgoing_items": "{item}",
    "otelcol_processor_internal_duration": "s", "otelcol_exporter_enqueue_size": "{unit}",
    "otelcol_exporter_enqueue_size_bytes": "By", "otelcol_exporter_in_flight_requests": "{request}",
    "otelcol_exporter_queue_size": "{batch}", "otelcol_exporter_queue_capacity": "{batch}",
    "http_server_request_duration": "s", "http_client_request_duration": "s", "rpc_server_call_duration": "s",
    "rpc_client_call_duration": "s", "otelcol_processor_filter_spans_filtered": "1",
    "otelcol_processor_filter_logs_filtered": "1", "otelcol_processor_filter_datapoints_filtered": "1",
    _TAIL + "count_traces_sampled": "{traces}", _TAIL + "global_count_traces_sampled": "{traces}",
    _TAIL + "new_trace_id_received": "{traces}", _TAIL + "sampling_trace_dropped_too_early": "{traces}",
    _TAIL + "sampling_traces_on_memory": "{traces}", _TAIL + "sampling_policy_evaluation_error": "{errors}",
}
_ITEM_UNITS = {"_spans": "{span}", "_metric_points": "{datapoint}", "_log_records": "{record}"}
_ITEM_COUNTERS = ("otelcol_receiver_", "otelcol_exporter_", "otelcol_processor_memory_limiter_")
Key = tuple[str, tuple[str, ...]]


@dataclass
class _Totals:
    """Each series' total at one moment: sums' values, histograms' bucket counts and sum."""

    values: dict[Key, float] = field(default_factory=dict)
    histograms: dict[Key, tuple[tuple[int, ...], float]] = field(default_factory=dict)


@dataclass
class Snapshot:
    """Builds requests from one registry for one reader; keeps what delta temporality subtracts."""

    metrics: Metrics
    temporality: str = "cumulative"  # cumulative, delta or lowmemory
    started: int = field(default_factory=time.time_ns)
    _sent: _Totals = field(default_factory=_Totals)  # as of the last delivered push
    _sent_at: int = 0
    _pending: tuple[_Totals, int] | None = None

    def __post_init__(self) -> None:
        self._sent_at = self.started

    def request(self, leave_out: frozenset[str] = frozenset()) -> ExportMetricsServiceRequest:
        """Every family but those in `leave_out` (the level's), as they are now."""
        now = time.time_ns()
        current = _Totals()
        metrics: list[metrics_pb2.Metric] = []
        for counter in list(self.metrics.counters.values()):
            if counter.name not in leave_out:
                metrics.append(self._sum(counter, counter.samples(), self._delta("counter"), now, current))
        for gauge in list(self.metrics.gauges.values()):
            if gauge.name in leave_out:
                continue
            if gauge.kind == "counter":
                metrics.append(self._sum(gauge, gauge.read(), self._delta("observed"), now, current))
            else:
                metrics.append(_gauge(gauge, now, self.started))
        for histogram in list(self.metrics.histograms.values()):
            if histogram.name not in leave_out:
                metrics.append(self._histogram(histogram, now, current))
        self._pending = (current, now)
        scope = metrics_pb2.ScopeMetrics(scope=InstrumentationScope(name=SCOPE, version=__version__),
                                         metrics=[m for m in metrics if m.WhichOneof("data")])
        resource = Resource(attributes=[_attribute(name, value) for name, value in self.metrics.info.items()])
        return ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(resource=resource,
                                                                                         scope_metrics=[scope])])

    def delivered(self) -> None:
        """The last request reached the upstream: the next delta starts where it ended."""
        if self._pending is not None:
            sent, self._sent_at = self._pending
            self._sent.values.update(sent.values)
            self._sent.histograms.update(sent.histograms)
            self._pending = None

    def _delta(self, kind: str) -> bool:
        return self.temporality == "delta" or (self.temporality == "lowmemory" and kind == "counter")

    def _sum(self, family: Counter | Gauge, samples: Iterable[tuple[tuple[str, ...], float]], delta: bool, now: int,
             current: _Totals) -> metrics_pb2.Metric:
        points = []
        for labels, value in samples:
            start, reported = self.started, value
            if delta:
                key = (family.name, labels)
                current.values[key] = value
                before = self._sent.values.get(key, 0.0)
                reported = value - before if value >= before else value  # less: the count started again
                start = self._sent_at
                if reported == 0 and isinstance(family, Counter):
                    continue
            point = metrics_pb2.NumberDataPoint(attributes=_attributes(family.labelnames, labels, family.derived),
                                                start_time_unix_nano=start, time_unix_nano=now)
            if isinstance(family, Counter) and float(reported).is_integer():  # counts of items, Int64 in otelcol
                point.as_int = int(reported)
            else:
                point.as_double = reported
            points.append(point)
        metric = _metric(family.name, family.documentation)
        if points:
            metric.sum.CopyFrom(metrics_pb2.Sum(data_points=points, is_monotonic=True,
                                                aggregation_temporality=_DELTA if delta else _CUMULATIVE))
        return metric

    def _histogram(self, histogram: Histogram, now: int, current: _Totals) -> metrics_pb2.Metric:
        delta = self._delta("counter")
        points = []
        for labels, (counts, total) in list(histogram.values.items()):
            reported_counts, reported_sum, start = list(counts), total[0], self.started
            if delta:
                key = (histogram.name, labels)
                current.histograms[key] = (tuple(counts), total[0])
                before = self._sent.histograms.get(key)
                if before is not None:
                    reported_counts = [now_count - then for now_count, then in zip(counts, before[0], strict=True)]
                    reported_sum -= before[1]
                start = self._sent_at
                if not any(reported_counts):
                    continue
            points.append(metrics_pb2.HistogramDataPoint(
                attributes=_attributes(histogram.labelnames, labels, None), start_time_unix_nano=start,
                time_unix_nano=now, count=sum(reported_counts), sum=reported_sum, bucket_counts=reported_counts,
                explicit_bounds=histogram.buckets))
        metric = _metric(histogram.name, histogram.documentation)
        if points:
            metric.histogram.CopyFrom(metrics_pb2.Histogram(
                data_points=points, aggregation_temporality=_DELTA if delta else _CUMULATIVE))
        return metric


def _gauge(gauge: Gauge, now: int, started: int) -> metrics_pb2.Metric:
    up_down = gauge.name in _UP_DOWN
    points = [metrics_pb2.NumberDataPoint(attributes=_attributes(gauge.labelnames, labels, gauge.derived),
                                          start_time_unix_nano=started if up_down else 0, time_unix_nano=now,
                                          as_double=value) for labels, value in gauge.read()]
    metric = _metric(gauge.name, gauge.documentation)
    if points and up_down:
        metric.sum.CopyFrom(metrics_pb2.Sum(data_points=points, is_monotonic=False,
                                            aggregation_temporality=_CUMULATIVE))
    elif points:
        metric.gauge.CopyFrom(metrics_pb2.Gauge(data_points=points))
    return metric


def _metric(name: str, documentation: str) -> metrics_pb2.Metric:
    """An empty metric with otelcol's instrument name and unit."""
    unit = _UNITS.get(name, "")
    if not unit and name.startswith(_ITEM_COUNTERS):
        unit = next((unit for suffix, unit in _ITEM_UNITS.items() if name.endswith(suffix)), "")
    return metrics_pb2.Metric(name=_NAMES.get(name, name), description=documentation, unit=unit)


def _attributes(names: tuple[str, ...], values: tuple[str, ...], derived: Derived | None) -> list[KeyValue]:
    pairs: Mapping[str, str] = dict(zip(names, values, strict=True))
    if derived is not None:
        pairs = {**pairs, **dict(zip(derived.names, derived.values(values), strict=True))}
    return [_attribute(_DOTTED.get(name, name), value) for name, value in pairs.items() if value != ""]


def _attribute(name: str, value: str) -> KeyValue:
    if name in _INTEGERS and value.isdigit():
        return KeyValue(key=name, value=AnyValue(int_value=int(value)))
    return KeyValue(key=name, value=AnyValue(string_value=value))
