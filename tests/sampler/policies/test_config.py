"""The `policies:` list: otelcol's example is accepted and built; each mistake is reported at its
YAML path with a message that names the problem (tests/testdata/sampler/*.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeagent.component import ComponentConfig
from sampler.policies import build_policies
from sampler.policies.config import PolicyConfig
from tests.helpers.config_errors import assert_reported
from tests.sampler.policies.traces import FakeClock

DATA = Path(__file__).resolve().parents[2] / "testdata" / "sampler"
BAD = yaml.safe_load((DATA / "bad-policies.yaml").read_text())


class Policies(ComponentConfig):
    policies: list[PolicyConfig]


def test_otelcols_readme_example_is_accepted_and_built():
    config = Policies.model_validate(yaml.safe_load((DATA / "policies.yaml").read_text()))
    built = build_policies(config.policies, FakeClock())
    assert [policy.name for policy in built][:2] == ["drop-policy-1", "test-policy-1"]
    assert {policy.type for policy in built} == {
        "always_sample", "latency", "numeric_attribute", "probabilistic", "status_code", "string_attribute",
        "rate_limiting", "bytes_limiting", "span_count", "trace_state", "boolean_attribute", "and", "drop",
        "composite", "not", "trace_flags", "ottl_condition"}


@pytest.mark.parametrize("case", BAD, ids=[f"{number}-{case['policy']['type']}" for number, case in enumerate(BAD)])
def test_a_mistake_is_reported_at_its_path_with_what_to_change(case):
    path = "::".join(part for part in ("processors::tail_sampling::policies::0", case["path"]) if part)
    assert_reported(Policies, {"policies": [case["policy"]]}, "processors::tail_sampling", [(path, case["words"])])
