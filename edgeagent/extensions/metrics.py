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

The text is written here (version 0.0.4 of the format, as prometheus_client's `generate_latest`
writes it: labels sorted, values as Go formats them, label names outside the legacy character
set with underscores) rather than by prometheus_client, whose import would add 1 MiB to the
agent's idle memory and a few hundredths of a second to its start for these few lines.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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

    def render(self, out: list[str], constant: Mapping[str, str] | None = None) -> None:
        _head(out, self.name, self.documentation, "histogram")
        for labels, (counts, total) in list(self.values.items()):
            named = {**(constant or {}), **dict(zip(self.labelnames, labels, strict=True))}
            cumulative = 0
            for bound, count in zip([*map(_bound, self.buckets), "+Inf"], counts, strict=True):
                cumulative += count
                _sample(out, self.name + "_bucket", {**named, "le": bound}, cumulative)
            _sample(out, self.name + "_sum", named, total[0])
            _sample(out, self.name + "_count", named, cumulative)


def _bound(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}
        self.gauges: dict[str, Gauge] = {}
        self.histograms: dict[str, Histogram] = {}
        self.info: dict[str, str] = {}  # target_info: the resource of the process (service.name, ...)

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

    def render(self, leave_out: frozenset[str] = frozenset(), constant: Mapping[str, str] | None = None) -> bytes:
        """The text of every family but those named in `leave_out` (the telemetry level's), every
        series with the `constant` labels too (a reader's with_resource_constant_labels)."""
        out: list[str] = []
        extra = dict(constant or {})
        for counter in list(self.counters.values()):
            if counter.name not in leave_out:
                _counter_families(out, counter, counter.samples(), extra)
        for gauge in list(self.gauges.values()):
            if gauge.name in leave_out:
                continue
            if gauge.kind == "counter":
                _counter_families(out, gauge, gauge.read(), extra)
            else:
                _family(out, gauge.name, gauge.documentation, "gauge", gauge.labelnames, gauge.derived, gauge.read(),
                        extra)
        for histogram in list(self.histograms.values()):
            if histogram.name not in leave_out:
                histogram.render(out, extra)
        if self.info:
            _head(out, "target_info", "Target metadata", "gauge")
            _sample(out, "target_info", self.info, 1.0)
        return "".join(out).encode()

    def snapshot(self) -> dict[str, Any]:
        return {name: dict(counter.values) for name, counter in self.counters.items()}


def _counter_families(out: list[str], counter: Counter | Gauge, samples: Samples,
                      constant: Mapping[str, str] | None = None) -> None:
    samples = list(samples)
    _family(out, counter.name + "_total", counter.documentation, "counter", counter.labelnames, counter.derived,
            samples, constant)
    _family(out, counter.name, counter.documentation + ALIAS_NOTE, "untyped", counter.labelnames, counter.derived,
            samples, constant, sample_name=counter.name)


def _family(out: list[str], name: str, documentation: str, kind: str, labelnames: tuple[str, ...],
            derived: Derived | None, samples: Samples, constant: Mapping[str, str] | None = None,
            sample_name: str | None = None) -> None:
    _head(out, name, documentation, kind)
    for labels, value in samples:
        named: Mapping[str, str] = {**(constant or {}), **dict(zip(labelnames, labels, strict=True))}
        if derived is not None:
            named = {**named, **dict(zip(derived.names, derived.values(labels), strict=True))}
        _sample(out, sample_name or name, named, value)


def _head(out: list[str], name: str, documentation: str, kind: str) -> None:
    help_text = documentation.replace("\\", "\\\\").replace("\n", "\\n")
    out.append(f"# HELP {name} {help_text}\n")
    out.append(f"# TYPE {name} {kind}\n")


_NOT_IN_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]|^[0-9]")


def _sample(out: list[str], name: str, labels: Mapping[str, str], value: float) -> None:
    if labels:
        pairs = ",".join(f'{_NOT_IN_LABEL_NAME.sub("_", key)}="{_escape(text)}"'
                         for key, text in sorted(labels.items()))
        out.append(f"{name}{{{pairs}}} {_go_float(value)}\n")
    else:
        out.append(f"{name} {_go_float(value)}\n")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _go_float(value: float) -> str:
    """A sample value as Go (and Prometheus) writes it: +Inf, NaN, exponents beyond 1e6."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text
