"""The filter processor's config: otelcol's README examples and testdata are accepted and built;
each mistake is reported at its YAML path with what to change (tests/testdata/filter/*.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeagent.processors.filter import FilterConfig, FilterProcessor
from edgeagent.signals import Signal
from tests.helpers.config_errors import assert_reported

DATA = Path(__file__).resolve().parents[1] / "testdata" / "filter"
GOOD = yaml.safe_load((DATA / "good.yaml").read_text())
BAD = yaml.safe_load((DATA / "bad.yaml").read_text())


@pytest.mark.parametrize("name", list(GOOD))
def test_otelcols_examples_are_accepted_and_built(name):
    config = FilterConfig.model_validate(GOOD[name])
    processor = FilterProcessor("filter", config)
    assert processor.walks, "every example filters some signal with OTTL conditions"
    assert set(processor.walks) <= set(Signal)


def test_a_flat_list_is_one_group_and_groups_keep_their_order_and_error_mode():
    config = FilterConfig.model_validate(GOOD["readme/advanced"])
    passes = config.passes(Signal.TRACES)
    assert len(passes) == 3
    assert passes[0].resource is not None and passes[0].item is None
    assert passes[1].item is not None and not passes[1].item.propagate
    assert passes[2].sub is not None and passes[2].sub.propagate
    basic = FilterConfig.model_validate(GOOD["readme/basic"]).passes(Signal.TRACES)
    assert len(basic) == 1 and basic[0].resource is not None and basic[0].item is not None


@pytest.mark.parametrize("case", BAD, ids=[f"{number}-{case['path'] or 'processor'}" for number, case in
                                           enumerate(BAD)])
def test_a_mistake_is_reported_at_its_path_with_what_to_change(case):
    path = "::".join(part for part in ("processors::filter/x", case["path"]) if part)
    assert_reported(FilterConfig, case["config"], "processors::filter/x", [(path, case["words"])])
