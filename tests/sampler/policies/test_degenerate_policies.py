"""Policies otelcol 0.165 starts with though they sample little or nothing
(tests/testdata/sampler/degenerate-policies.yaml): edgeagent refused them, so configs otelcol runs
did not load. Each is accepted, decided as otelcol decides, and warned about where it is surely
not what was meant."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from sampler.policies.probabilistic import MAX_UINT64, threshold
from tests.sampler.policies.traces import decisions, span, spans_trace

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


def test_a_percentage_outside_0_to_100_saturates_as_gos_math_big_does():
    """calculateThreshold's big.Float.Uint64 gives MaxUint64 above it and 0 below zero."""
    assert threshold(150) == threshold(100) == MAX_UINT64
    assert threshold(-5) == threshold(0) == 0
