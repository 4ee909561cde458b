"""The agent's own metrics, in Prometheus format, with otelcol's names.

Counters are exposed under the exact otelcol names (`otelcol_receiver_accepted_spans`,
without a `_total` suffix), so the deployment guides' alert rules work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample


class Counter:
    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]):
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def total(self, **match: str) -> float:
        """Sum over every label set that matches the given labels."""
        indexes = [(self.labelnames.index(key), value) for key, value in match.items()]
        return sum(v for labels, v in self.values.items() if all(labels[i] == value for i, value in indexes))


class Gauge:
    """A gauge whose samples are read from the live state at scrape time."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]):
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.read = read


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}
        self.gauges: dict[str, Gauge] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> Counter:
        if name not in self.counters:
            self.counters[name] = Counter(name, documentation, labelnames)
        return self.counters[name]

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...],
              read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        self.gauges[name] = Gauge(name, documentation, labelnames, read)

    def collect(self) -> Iterable[Metric]:
        for counter in list(self.counters.values()):
            metric = Metric(counter.name, counter.documentation, "counter")
            for labels, value in list(counter.values.items()):
                metric.samples.append(Sample(counter.name, dict(zip(counter.labelnames, labels)), value))
            yield metric
        for gauge in list(self.gauges.values()):
            metric = Metric(gauge.name, gauge.documentation, "gauge")
            for labels, value in gauge.read():
                metric.samples.append(Sample(gauge.name, dict(zip(gauge.labelnames, labels)), value))
            yield metric

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        return {name: dict(counter.values) for name, counter in self.counters.items()}
