"""Tail sampling policies otelcol 0.165 refuses or takes, side by side with edgeagent.

otelcol builds its policies when it starts (`validate` does not), so each case starts a real
otelcol: a policy it refuses (tests/testdata/sampler/bad-policies.yaml) edgeagent refuses too;
one it starts with and partly ignores (ignored-policies.yaml) edgeagent loads, with a warning
naming the ignored key; one it starts with that samples little or nothing
(degenerate-policies.yaml) edgeagent loads too. A bad-policies case otelcol starts with carries `otelcol_starts`: why
edgeagent still refuses it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeagent.config.document import ConfigError
from edgeagent.config.loader import load_text

pytestmark = pytest.mark.e2e

DATA = Path(__file__).resolve().parents[1] / "testdata" / "sampler"
BAD = yaml.safe_load((DATA / "bad-policies.yaml").read_text())
IGNORED = yaml.safe_load((DATA / "ignored-policies.yaml").read_text())
DEGENERATE = yaml.safe_load((DATA / "degenerate-policies.yaml").read_text())


def _config(policy: dict, endpoint: str = "127.0.0.1:4318") -> dict:
    """edgeagent's is only loaded, never started; otelcol's listens on a port of the system's choosing."""
    return {"receivers": {"otlp": {"protocols": {"http": {"endpoint": endpoint}}}},
            "processors": {"tail_sampling": {"policies": [policy]}}, "exporters": {"debug": {}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                                 "exporters": ["debug"]}}}}


def _otelcol_starts(otelcol, policy: dict) -> bool:
    try:
        otelcol(_config(policy, "127.0.0.1:0"))
    except RuntimeError as error:  # exited: the log says why
        assert "tail_sampling" in str(error), str(error)[-2000:]
        return False
    return True


@pytest.mark.parametrize("case", BAD, ids=[f"{number}-{case['policy']['type']}" for number, case in enumerate(BAD)])
def test_a_policy_otelcol_refuses_at_start_edgeagent_refuses(otelcol, case):
    assert _otelcol_starts(otelcol, case["policy"]) == ("otelcol_starts" in case)
    with pytest.raises(ConfigError) as refused:
        load_text(yaml.safe_dump(_config(case["policy"])), {})
    assert str(refused.value).startswith("processors::tail_sampling::policies::0"), str(refused.value)


@pytest.mark.parametrize("case", IGNORED,
                         ids=[f"{number}-{case['policy']['type']}" for number, case in enumerate(IGNORED)])
def test_a_key_otelcol_starts_with_and_ignores_edgeagent_loads_with_a_warning(otelcol, case):
    assert _otelcol_starts(otelcol, case["policy"])
    loaded = load_text(yaml.safe_dump(_config(case["policy"])), {})
    path = "::".join(part for part in ("processors::tail_sampling: policies::0", case["path"]) if part)
    assert any(warning.startswith(f"{path}: has no effect") for warning in loaded.warnings), loaded.warnings


@pytest.mark.parametrize("case", DEGENERATE,
                         ids=[f"{number}-{case['policy']['type']}" for number, case in enumerate(DEGENERATE)])
def test_a_policy_otelcol_starts_with_though_it_samples_little_edgeagent_loads(otelcol, case):
    assert _otelcol_starts(otelcol, case["policy"])
    loaded = load_text(yaml.safe_dump(_config(case["policy"])), {})
    if case["path"] is not None:
        path = f"processors::tail_sampling: policies::0::{case['path']}: "
        assert any(warning.startswith(path) for warning in loaded.warnings), loaded.warnings
