"""What the tail-sampling hub example (the Helm chart's, after the tail-sampling selector's deployment guide)
keeps: `alwaysSampleErrors` with `errorSampleRate: 1.0` (every error trace), `sampleLatency` over
`latencyThresholdMs: 5000` at `latencySampleRate: 0.1` (one slow trace in ten), nothing else."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from sampler.policies import build_policies, decide
from sampler.policies.config import PolicyConfig
from sampler.trace import Decision
from tests.sampler.policies.traces import FakeClock, batch, span, trace

CHART = Path(__file__).resolve().parents[3] / "packaging" / "helm" / "edgeagent"
EXAMPLE = CHART / "examples" / "tail-sampling-hub.yaml"
TRACES = 4000


def _policies():
    values = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    configs = values["hub"]["config"]["processors"]["tail_sampling"]["policies"]
    return build_policies([PolicyConfig.model_validate(config) for config in configs], FakeClock())


def _kept(policies, duration_ms: float, status: str, seed: int) -> int:
    rng = random.Random(seed)
    kept = 0
    for _ in range(TRACES):
        one = trace(batch([span(start_ms=0, end_ms=duration_ms, status=status)]), trace_id=rng.randbytes(16))
        kept += decide(policies, one, False)[0] == Decision.SAMPLED
    return kept


def test_the_guides_sampling_keeps_every_error_one_slow_trace_in_ten_and_nothing_else():
    policies = _policies()
    assert _kept(policies, 10, "ERROR", seed=1) == TRACES
    assert _kept(policies, 60_000, "ERROR", seed=2) == TRACES
    assert _kept(policies, 10, "OK", seed=3) == 0
    assert _kept(policies, 4_999, "UNSET", seed=4) == 0
    slow = _kept(policies, 5_001, "UNSET", seed=5)
    assert 0.08 * TRACES < slow < 0.12 * TRACES, slow
