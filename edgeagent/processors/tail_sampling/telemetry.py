"""The tail-sampling stage's metrics: otelcol's tail_sampling processor's, and edgeagent's own."""

from __future__ import annotations

import collections
from typing import Protocol

from edgeagent.extensions.metrics import Derived, Metrics
from sampler.telemetry import Counter, MetricsSink
from sampler.trace import Decision

_PREFIX = "otelcol_processor_tail_sampling_"
# otelcol labels its decision counters with the decision as well as `sampled` (the last label)
_DECISION = Derived(("decision",), lambda labels: ("sampled" if labels[-1] == "true" else "not_sampled",))
_COUNTERS = (
    (_PREFIX + "count_traces_sampled", "Traces per policy and decision.", ("processor", "policy", "sampled")),
    (_PREFIX + "global_count_traces_sampled", "Traces by final decision.", ("processor", "sampled")),
    (_PREFIX + "new_trace_id_received", "Traces first seen.", ("processor",)),
    (_PREFIX + "sampling_policy_evaluation_error", "Count of sampling policy evaluation errors.", ("processor",)),
    (_PREFIX + "sampling_trace_dropped_too_early",
     "Traces decided before their decision_wait because the buffer was full.", ("processor",)),
    (_PREFIX + "sampling_late_spans", "Spans that arrived after their trace's decision.", ("processor", "sampled")),
    ("edgeagent_sampler_stress_relief_traces", "Traces decided by stress relief (no buffering).",
     ("processor", "sampled")),
    (_PREFIX + "traces_dropped_too_large",
     "Traces dropped before their decision because they grew past maximum_trace_size_bytes.", ("processor",)),
    ("edgeagent_sampler_dropped_on_shutdown",
     "Pending traces dropped at shutdown (drop_pending_traces_on_shutdown).", ("processor",)),
)


class Observed(Protocol):
    """What the gauges read of the stage."""

    def pending_traces(self) -> int: ...

    def gauges(self) -> tuple[int, int, bool]:
        """num_traces, buffered spans, whether stress relief is on."""


class StageTelemetry:
    def __init__(self, component_id: str, metrics: MetricsSink, stage: Observed):
        self.id = component_id
        self._counters: dict[str, Counter] = {}
        for name, text, labels in _COUNTERS:
            if isinstance(metrics, Metrics) and name.endswith("count_traces_sampled"):  # otelcol's decision label
                self._counters[name] = metrics.counter(name, text, labels, _DECISION)
            else:
                self._counters[name] = metrics.counter(name, text, labels)
        metrics.gauge(_PREFIX + "sampling_traces_on_memory", "Traces waiting for a decision or its move to export.",
                      ("processor",), lambda: [((self.id,), float(stage.pending_traces()))])
        metrics.gauge("edgeagent_sampler_traces_limit", "num_traces: traces the buffer holds before it decides early.",
                      ("processor",), lambda: [((self.id,), float(stage.gauges()[0]))])
        metrics.gauge("edgeagent_sampler_buffered_spans", "Spans waiting for their trace's decision (on disk).",
                      ("processor",), lambda: [((self.id,), float(stage.gauges()[1]))])
        metrics.gauge("edgeagent_sampler_stress_relief_active", "1 while stress relief decides without buffering.",
                      ("processor",), lambda: [((self.id,), 1.0 if stage.gauges()[2] else 0.0)])
        self.count(_PREFIX + "sampling_policy_evaluation_error", 0)  # served from the start, as otelcol's

    def count(self, name: str, amount: int, *labels: str) -> None:
        self._counters[name].inc(amount, self.id, *labels)

    def decisions(self, evaluated: list[tuple[str, list[Decision]]], decisions: dict[bytes, bool]) -> None:
        """A round's decisions: per policy (its name, its decisions on the traces it evaluated) and
        final (trace id: kept). Counted once per round, not per trace: a counter's labels cost more
        than a decision, and list.count compares in C."""
        errors = 0
        by_policy: collections.Counter[tuple[str, str]] = collections.Counter()
        for policy, results in evaluated:
            failed = results.count(Decision.ERROR)
            keeps = results.count(Decision.SAMPLED)
            errors += failed
            by_policy[policy, "true"] += keeps
            by_policy[policy, "false"] += len(results) - keeps - failed
        for (policy, label), count in by_policy.items():
            if count:
                self.count(_PREFIX + "count_traces_sampled", count, policy, label)
        if errors:
            self.count(_PREFIX + "sampling_policy_evaluation_error", errors)
        sampled = sum(decisions.values())
        for label, count in (("true", sampled), ("false", len(decisions) - sampled)):
            if count:
                self.count(_PREFIX + "global_count_traces_sampled", count, label)
