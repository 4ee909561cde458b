"""What the sampler asks of a metrics registry: counters and scrape-time gauges (a Protocol, so the
library names no registry). Without one it counts nothing (NO_METRICS)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

GaugeRead = Callable[[], Iterable[tuple[tuple[str, ...], float]]]


class Counter(Protocol):
    def inc(self, amount: float, *labels: str) -> None: ...


class MetricsSink(Protocol):
    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> Counter: ...

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...], read: GaugeRead) -> None: ...


class _NoCounter:
    def inc(self, amount: float, *labels: str) -> None:
        return None


class _NoMetrics:
    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> Counter:
        return _NoCounter()

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...], read: GaugeRead) -> None:
        return None


NO_METRICS: MetricsSink = _NoMetrics()
