"""The agent's own metrics, in the Prometheus text format, with otelcol 0.165's names.

otelcol 0.165 serves its counters without a type suffix (`otelcol_receiver_accepted_spans`,
`otelcol_process_uptime`), which Prometheus' own lint (`promtool check metrics`) rejects for the
counter type. Every counter is therefore served twice:

* `<name>_total`, typed `counter`: the Prometheus convention, which otelcol also follows when its
  reader sets `without_type_suffix: false`;
* `<name>`, typed `untyped`: otelcol 0.165's default spelling, so dashboards and alert rules
  written against otelcol keep working unchanged.

Gauges and histograms have one name, the same in both spellings. Counter names are registered
bare (without `_total`); labels a counter derives from its own (an exporter's destination) are
added when it is rendered.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

Samples = Iterable[tuple[tuple[str, ...], float]]
# OpenTelemetry's default explicit bucket boundaries, which otelcol's duration histograms use
DEFAULT_BUCKETS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
                   10000.0)
ALIAS_NOTE = " (otelcol's spelling without the _total suffix; same value)"


@dataclass(frozen=True)
class Derived:
    """Labels computed from a series' own labels when it is rendered (e.g. an exporter's server address)."""

    names: tuple[str, ...]
    values: Callable[[tuple[str, ...]], tuple[str, ...]]


class Counter:
    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], derived: Derived | None = None):
        if name.endswith("_total"):
            raise ValueError(f"counter {name}: register it without _total; the renderer adds the suffix")
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.derived = derived
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def total(self, **match: str) -> float:
        """Sum over every label set that matches the given labels."""
        indexes = [(self.labelnames.index(key), value) for key, value in match.items()]
        return sum(v for labels, v in self.values.items() if all(labels[i] == value for i, value in indexes))

    def samples(self) -> Samples:
        return list(self.values.items())


class Gauge:
    """A gauge (or, with kind="counter", a counter) whose samples are read from live state at scrape time."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], read: Callable[[], Samples],
                 kind: str = "gauge"):
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.read = read
        self.kind = kind
        self.derived: Derived | None = None


class Histogram:
    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]):
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.buckets = buckets
        self.values: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # labels -> (counts, [sum])

    def observe(self, value: float, *labels: str) -> None:
        series = self.values.get(labels)
        if series is None:
            series = self.values[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        series[0][bisect.bisect_left(self.buckets, value)] += 1
        series[1][0] += value

    def metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, "histogram")
        for labels, (counts, total) in list(self.values.items()):
            named = dict(zip(self.labelnames, labels, strict=True))
            cumulative = 0
            for bound, count in zip([*map(_bound, self.buckets), "+Inf"], counts, strict=True):
                cumulative += count
                metric.samples.append(Sample(self.name + "_bucket", {**named, "le": bound}, cumulative))
            metric.samples.append(Sample(self.name + "_sum", named, total[0]))
            metric.samples.append(Sample(self.name + "_count", named, cumulative))
        return metric


def _bound(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}
        self.gauges: dict[str, Gauge] = {}
        self.histograms: dict[str, Histogram] = {}
        self.info: dict[str, str] = {}  # target_info: the resource of the process (service.name, ...)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...],
                derived: Derived | None = None) -> Counter:
        if name not in self.counters:
            self.counters[name] = Counter(name, documentation, labelnames, derived)
        return self.counters[name]

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...], read: Callable[[], Samples]) -> None:
        self.gauges[name] = Gauge(name, documentation, labelnames, read)

    def observed_counter(self, name: str, documentation: str, labelnames: tuple[str, ...],
                         read: Callable[[], Samples]) -> None:
        """A counter kept elsewhere (CPU seconds, uptime), read at scrape time."""
        self.gauges[name] = Gauge(name, documentation, labelnames, read, kind="counter")

    def histogram(self, name: str, documentation: str, labelnames: tuple[str, ...],
                  buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> Histogram:
        if name not in self.histograms:
            self.histograms[name] = Histogram(name, documentation, labelnames, buckets)
        return self.histograms[name]

    def collect(self) -> Iterable[Metric]:
        for counter in list(self.counters.values()):
            yield from _counter_families(counter, counter.samples())
        for gauge in list(self.gauges.values()):
            if gauge.kind == "counter":
                yield from _counter_families(gauge, gauge.read())
            else:
                yield _family(gauge.name, gauge.documentation, "gauge", gauge.labelnames, gauge.derived, gauge.read())
        for histogram in list(self.histograms.values()):
            yield histogram.metric()
        if self.info:
            metric = Metric("target_info", "Target metadata", "gauge")
            metric.samples.append(Sample("target_info", self.info, 1.0))
            yield metric

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        return {name: dict(counter.values) for name, counter in self.counters.items()}


def _counter_families(counter: Counter | Gauge, samples: Samples) -> Iterable[Metric]:
    samples = list(samples)
    # prometheus_client names a counter family without _total and its samples with it
    typed = _family(counter.name, counter.documentation, "counter", counter.labelnames, counter.derived, samples)
    for index, sample in enumerate(typed.samples):
        typed.samples[index] = sample._replace(name=counter.name + "_total")
    yield typed
    yield _family(counter.name, counter.documentation + ALIAS_NOTE, "unknown", counter.labelnames, counter.derived,
                  samples)


def _family(name: str, documentation: str, kind: str, labelnames: tuple[str, ...], derived: Derived | None,
            samples: Samples) -> Metric:
    metric = Metric(name, documentation, kind)
    for labels, value in samples:
        named: Mapping[str, str] = dict(zip(labelnames, labels, strict=True))
        if derived is not None:
            named = {**named, **dict(zip(derived.names, derived.values(labels), strict=True))}
        metric.samples.append(Sample(name, dict(named), value))
    return metric
