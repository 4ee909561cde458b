"""Policies otelcol 0.165 starts with though they sample little or nothing
(tests/testdata/sampler/degenerate-policies.yaml): edgeagent refused them, so configs otelcol runs
did not load. Each is accepted, decided as otelcol decides, and warned about where it is surely
not what was meant."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from sampler.policies import build_policy
from sampler.policies.bytes_limiting import traces_data_size
from sampler.policies.config import LatencyConfig
from sampler.policies.latency import Latency
from sampler.policies.probabilistic import MAX_UINT64, threshold
from sampler.trace import Decision, Trace
from tests.sampler.policies.traces import EPOCH_NS, FakeClock, decisions, policy_config, span, spans_trace

DATA = Path(__file__).resolve().parents[2] / "testdata" / "sampler"
CASES = yaml.safe_load((DATA / "degenerate-policies.yaml").read_text())
TRACES = {"plain": spans_trace(span({"k": 75}, start_ms=0, end_ms=300)),
          "two_spans": spans_trace(span(), span({"k": False}, start_ms=0, end_ms=50)),
          "unnamed_attribute": spans_trace(span({"": "a"}))}


@pytest.mark.parametrize("case", CASES, ids=[f"{number}-{case['policy']['type']}" for number, case in enumerate(CASES)])
def test_a_policy_otelcol_starts_with_is_accepted_and_warned_about_at_its_path(case):
    config = TailSamplingConfig.model_validate({"policies": [case["policy"]]})
    warned = dict(warning.split(": ", 1) for warning in config.config_warnings())
    if case["path"] is None:
        assert warned == {}
        return
    path = f"policies::0::{case['path']}"
    assert list(warned) == [path], warned
    assert all(word in warned[path] for word in case["words"]), warned[path]


@pytest.mark.parametrize("snippet, expected", [
    ("latency: {threshold_ms: 100, upper_threshold_ms: 50}", "N N N"),
    ("span_count: {min_spans: 2, max_spans: 1}", "N N N"),
    ("numeric_attribute: {key: k, min_value: 100, max_value: 50}", "N N N"),
    ("probabilistic: {sampling_percentage: 150}", "S S S"),
    ("probabilistic: {sampling_percentage: -5}", "N N N"),
    ("rate_limiting: {spans_per_second: 0}", "N N N"),
    ("bytes_limiting: {burst_capacity: 10}", "N N N"),  # no trace here fits in 10 bytes
    ("boolean_attribute: {key: k}", "S S N"),  # an int attribute reads as false, as pdata's Bool() does
    ("string_attribute: {values: [a]}", "N N S"),
    ("drop: {drop_sub_policy: []}", "D D D"),
    ("and: {and_sub_policy: []}", "S S S"),
    ("latency: null", "S S N"),  # threshold_ms 0: longer than 0 ms
    ("string_attribute: {key: k, values: []}", "N N N"),
    ("composite: {composite_sub_policy: [{name: a, type: always_sample}]}", "N N N"),
    ("composite: {max_total_spans_per_second: 10, composite_sub_policy: []}", "N N N"),
    ("composite: {max_total_spans_per_second: 10, composite_sub_policy: [{type: always_sample}]}", "S S S"),
], ids=lambda value: value.split(":")[0] if ":" in value else value)
def test_each_is_decided_as_otelcol_decides(snippet, expected):
    kind = snippet.split(":")[0]
    got = decisions(f"{{name: p, type: {kind}, {snippet}}}", TRACES)
    assert got == dict(zip(TRACES, expected.split(), strict=True))


BACKWARDS = {"long": spans_trace(span(start_ms=0, end_ms=300)), "instant": spans_trace(span()),
             "backwards": spans_trace(span(start_ms=10, end_ms=5.5)),  # ends 4.5 ms (whole: 4) before it starts
             "three_spans": spans_trace(span(), span(), span())}


@pytest.mark.parametrize("snippet, expected", [
    ("latency: {threshold_ms: -5}", "S S S S"),
    ("latency: {threshold_ms: -4}", "S S N S"),  # -4.5 ms truncates to -4, as Go's integer division does
    ("latency: {threshold_ms: -10, upper_threshold_ms: -1}", "N N S N"),
    ("span_count: {min_spans: -3}", "S S S S"),
    ("span_count: {min_spans: -3, max_spans: -1}", "N N N N"),
    ("span_count: {min_spans: -3, max_spans: 2}", "S S S N"),
    ("rate_limiting: {spans_per_second: -5}", "N N N N"),
    ("rate_limiting: {spans_per_second: 1, burst_capacity: -1}", "S S S N"),  # a burst of 2
    ("bytes_limiting: {bytes_per_second: -5, burst_capacity: 100000}", "S S S S"),
    ("string_attribute: {key: k, values: [a], enabled_regex_matching: true, cache_max_size: -1}", "N N N N"),
    ("composite: {max_total_spans_per_second: -1, composite_sub_policy: [{name: a, type: always_sample}]}",
     "N N N N"),
    ("composite: {max_total_spans_per_second: 10, composite_sub_policy: [{name: a, type: always_sample}], "
     "rate_allocation: [{policy: a, percent: -5}]}", "S S S S"),
], ids=lambda value: value.split("}")[0] if ":" in value else value)
def test_a_negative_setting_otelcol_takes_is_decided_as_otelcol_decides(snippet, expected):
    kind = snippet.split(":")[0]
    got = decisions(f"{{name: p, type: {kind}, {snippet}}}", BACKWARDS)
    assert got == dict(zip(BACKWARDS, expected.split(), strict=True))


@pytest.mark.parametrize("threshold_ms, sampled", [(-5, [True, True, True]), (-4, [True, False, True]),
                                                   (0, [True, False, False]), (4, [False, False, False])])
def test_a_negative_threshold_judged_by_a_traces_times_alone_as_by_its_spans(threshold_ms, sampled):
    """A trace decided without parsing it (its earliest start and latest end known) is judged
    as its spans would be: -4.5 ms is -4 whole milliseconds, -0.5 ms is 0."""
    times = [(EPOCH_NS, EPOCH_NS + 4_500_000), (EPOCH_NS, EPOCH_NS - 4_500_000), (EPOCH_NS, EPOCH_NS - 500_000)]
    traces = [Trace.unread(bytes(16), 1, 100, known, None) for known in times]
    policy = Latency(LatencyConfig(threshold_ms=threshold_ms))
    assert policy.evaluate_many(traces) == [Decision.SAMPLED if keep else Decision.NOT_SAMPLED for keep in sampled]


@pytest.mark.parametrize("kind", ["rate_limiting", "bytes_limiting"])
def test_a_negative_rate_refills_nothing_as_gos_limiter_and_takes_no_tokens_away(kind):
    """rate.Limiter's tokensFromDuration is 0 for a limit of 0 or below: the burst is all it
    ever grants, however much time passes."""
    clock, trace = FakeClock(), BACKWARDS["long"]
    unit, cost = ("spans", trace.span_count) if kind == "rate_limiting" else ("bytes", traces_data_size(trace))
    policy = build_policy(policy_config(f"{{name: p, type: {kind}, {kind}: {{{unit}_per_second: -1000000, "
                                        f"burst_capacity: {3 * cost}}}}}"), clock)
    got = []
    for _ in range(4):
        clock.advance(10)
        got.append(policy.evaluate(trace))
    assert got == [Decision.SAMPLED] * 3 + [Decision.NOT_SAMPLED]


def test_a_percentage_outside_0_to_100_saturates_as_gos_math_big_does():
    """calculateThreshold's big.Float.Uint64 gives MaxUint64 above it and 0 below zero."""
    assert threshold(150) == threshold(100) == MAX_UINT64
    assert threshold(-5) == threshold(0) == 0
