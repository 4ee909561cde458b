"""The failover connector's config through `edgeagent validate`: each mistake at its YAML path.

Each tests/testdata/connectors/failover/bad-*.yaml has one mistake (bad-failover-settings
has four); the path is checked exactly and a key word or two of the message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.conftest import check_errors, check_valid, run_validate

CONFIG_DIR = Path(__file__).resolve().parents[1] / "testdata" / "connectors" / "failover"

BAD_CONFIGS = {
    "bad-unknown-connector-type.yaml": [("connectors::roundrobin", ["failover"])],
    "bad-undefined-connector.yaml": [("service::pipelines::traces::exporters", ["failover/region", "connectors"])],
    "bad-connector-without-receiver.yaml": [
        ("service::pipelines::traces::exporters", ["failover", "receivers"]),
        ("connectors::failover::priority_levels::0::0", ["traces/primary", "receivers"]),
    ],
    "bad-connector-without-exporter.yaml": [
        ("service::pipelines::traces/primary::receivers", ["failover", "exporters"])
    ],
    "bad-level-pipeline-not-receiving.yaml": [("connectors::failover::priority_levels::1::0", ["traces/backup"])],
    "bad-level-pipeline-undefined.yaml": [
        ("connectors::failover::priority_levels::1::0", ["traces/central", "not defined"])
    ],
    "bad-receiving-pipeline-not-in-levels.yaml": [
        ("service::pipelines::traces/backup::receivers", ["priority_levels"])
    ],
    "bad-signal-mismatch.yaml": [("service::pipelines::metrics/backup::receivers", ["traces", "metrics"])],
    "bad-cycle.yaml": [("service::pipelines::traces/b::exporters", ["failover/a", "cycle"])],
    "bad-failover-no-levels.yaml": [("connectors::failover::priority_levels", ["required"])],
    "bad-failover-retry-gap.yaml": [("connectors::failover::retry_gap", ["retry_interval"])],
    "bad-failover-settings.yaml": [
        ("connectors::failover::priority_levels", ["level 1", "empty"]),
        ("connectors::failover::retry_interval", ["greater than 0"]),
        ("connectors::failover::max_retries", []),
        ("connectors::failover::retry_intervall", ["retry_interval"]),
    ],
}


def test_every_bad_config_file_has_a_case():
    assert {path.name for path in CONFIG_DIR.glob("bad-*.yaml")} == set(BAD_CONFIGS)


@pytest.mark.e2e  # runs `edgeagent validate`
@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_failover_config_reports_error_at_path(name):
    check_errors(run_validate(CONFIG_DIR / name), BAD_CONFIGS[name])


@pytest.mark.e2e  # runs `edgeagent validate`
def test_failover_config_in_otelcol_shape_is_valid_without_warnings():
    result = run_validate(CONFIG_DIR / "good-failover.yaml")
    check_valid(result)
    assert "warning" not in result.output.lower(), result.describe()


@pytest.mark.e2e  # runs `edgeagent validate`
def test_settings_without_effect_in_sub_pipelines_are_warnings_naming_their_path():
    result = run_validate(CONFIG_DIR / "good-failover-sub-pipeline-settings.yaml")
    check_valid(result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any(line.startswith("warning: exporters::otlphttp/backup::sending_queue: has no effect")
               for line in warnings), result.describe()
    assert any(line.startswith("warning: service::pipelines::traces/backup::processors:") and "batch" in line
               for line in warnings), result.describe()
    assert len(warnings) == 2, result.describe()
