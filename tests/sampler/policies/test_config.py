"""The `policies:` list: otelcol's example is accepted and built; each mistake is reported at its
YAML path with a message that names the problem (tests/testdata/sampler/*.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeagent.component import ComponentConfig
from edgeagent.config.loader import load_text
from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from sampler.policies import build_policies
from sampler.policies.config import PolicyConfig
from tests.helpers.config_errors import assert_reported
from tests.sampler.policies.traces import FakeClock

DATA = Path(__file__).resolve().parents[2] / "testdata" / "sampler"
BAD = yaml.safe_load((DATA / "bad-policies.yaml").read_text())
IGNORED = yaml.safe_load((DATA / "ignored-policies.yaml").read_text())


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


@pytest.mark.parametrize("case", IGNORED,
                         ids=[f"{number}-{case['policy']['type']}" for number, case in enumerate(IGNORED)])
def test_a_key_otelcol_ignores_is_accepted_with_a_warning_at_its_path(case):
    """otelcol 0.165 starts with each and ignores the key; refusing it broke drop-in configs, and
    taking it silently would hide a mistake, so the warning names it and says it does nothing."""
    config = TailSamplingConfig.model_validate({"policies": [case["policy"]]})
    warned = dict(warning.split(": ", 1) for warning in config.config_warnings())
    path = "::".join(part for part in ("policies::0", case["path"]) if part)
    assert list(warned) == [path], warned
    assert all(word in warned[path] for word in case["words"]), warned[path]
    assert build_policies(config.policies, FakeClock())


def test_cache_max_size_without_regex_matching_is_accepted_with_a_warning_at_each_path():
    """otelcol 0.165 takes cache_max_size on an exact-match string_attribute and ignores it (its
    NewStringAttributeFilter reads it only with enabled_regex_matching); edgeagent refused the
    config. Accepted now, and since it does nothing, a warning names each place it is written."""
    exact = {"type": "string_attribute", "string_attribute": {"key": "k", "values": ["a"], "cache_max_size": 10}}
    config = TailSamplingConfig.model_validate({"policies": [
        {"name": "top", **exact},
        {"name": "both", "type": "and", "and": {"and_sub_policy": [{"name": "s", "type": "always_sample"},
                                                                   {"name": "e", **exact}]}},
        {"name": "neither", "type": "not", "not": {"not_sub_policy": {"name": "n", **exact}}},
        {"name": "dropped", "type": "drop", "drop": {"drop_sub_policy": [{"name": "d", **exact}]}},
        {"name": "mix", "type": "composite", "composite": {"max_total_spans_per_second": 10, "composite_sub_policy": [
            {"name": "c", "type": "and", "and": {"and_sub_policy": [{"name": "ce", **exact}]}}]}},
        {"name": "regex", "type": "string_attribute", "string_attribute": {
            "key": "k", "values": ["^a"], "enabled_regex_matching": True, "cache_max_size": 10}},
    ]})
    warned = [warning.split(": ", 1) for warning in config.config_warnings()]
    assert [path for path, _ in warned] == [
        "policies::0::string_attribute::cache_max_size",
        "policies::1::and::and_sub_policy::1::string_attribute::cache_max_size",
        "policies::2::not::not_sub_policy::string_attribute::cache_max_size",
        "policies::3::drop::drop_sub_policy::0::string_attribute::cache_max_size",
        "policies::4::composite::composite_sub_policy::0::and::and_sub_policy::0::string_attribute::cache_max_size",
    ]
    assert all("enabled_regex_matching" in message and "no effect" in message for _, message in warned)


def test_the_cache_max_size_warning_names_the_full_yaml_path_at_load():
    document = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318"}}}},
        "processors": {"tail_sampling": {"policies": [{"name": "p", "type": "string_attribute", "string_attribute": {
            "key": "k", "values": ["a"], "cache_max_size": 10}}]}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                             "exporters": ["debug"]}}},
    }
    loaded = load_text(yaml.safe_dump(document), {})
    assert any(warning.startswith("processors::tail_sampling: policies::0::string_attribute::cache_max_size: has "
                                  "no effect") for warning in loaded.warnings), loaded.warnings
