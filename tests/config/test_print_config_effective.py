"""print-config prints the effective config, as otelcol 0.165 does: every component's settings
with their defaults filled in, durations as Go prints them, and the output loads again."""

from __future__ import annotations

import pytest
import yaml

from otel.durations import go_duration, parse_duration
from tests.config.conftest import REPO_ROOT
from tests.config.test_otelcol_compat import run_cli

CONFIG_DIR = REPO_ROOT / "tests" / "testdata" / "config"


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.2, "200ms"), (1.5, "1.5s"), (90, "1m30s"), (300, "5m0s"), (5400, "1h30m0s"),
    (1e-6, "1µs"), (1.5e-9 * 1000, "1.5µs"), (3e-9, "3ns"), (100 * 3600, "100h0m0s"), (0.0015, "1.5ms"),
])
def test_durations_print_as_go_prints_them_and_read_back(seconds, text):
    assert go_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


def test_print_config_fills_in_the_components_defaults():
    result = run_cli("print-config", "--config", str(CONFIG_DIR / "good-minimal.yaml"))
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["processors"]["batch"] == {"metadata_cardinality_limit": 1000, "metadata_keys": [],
                                              "send_batch_max_size": 0, "send_batch_size": 8192, "timeout": "5s"}
    exporter = printed["exporters"]["otlphttp"]
    assert (exporter["timeout"], exporter["retry_on_failure"]["max_elapsed_time"]) == ("30s", "5m0s")
    assert printed["service"]["pipelines"]["traces"]["processors"] == ["batch"]
    assert list(printed["receivers"]["otlp"]["protocols"]) == ["http"]  # the printed config serves no more


@pytest.mark.parametrize("name", ["good-minimal.yaml", "good-dollar-escape.yaml", "good-otlp-transports.yaml",
                                  "good-otelcol-queue-and-storage-keys.yaml", "good-telemetry-periodic-readers.yaml",
                                  "good-attributes-resources-in-metrics.yaml"])
def test_print_config_output_loads_again_to_the_same_effective_config(name, tmp_path):
    first = run_cli("print-config", "--mode", "unredacted", "--config", str(CONFIG_DIR / name))
    assert first.returncode == 0, first.stderr
    printed = tmp_path / "printed.yaml"
    printed.write_text(first.stdout)
    valid = run_cli("validate", "--config", str(printed))
    assert valid.returncode == 0, valid.stderr
    warned = {line for line in run_cli("validate", "--config", str(CONFIG_DIR / name)).stderr.splitlines()
              if line.startswith("warning:")}
    assert {line for line in valid.stderr.splitlines() if line.startswith("warning:")} == warned
    again = run_cli("print-config", "--mode", "unredacted", "--config", str(printed))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


def test_print_config_redacts_the_secrets_of_the_effective_config():
    result = run_cli("print-config", "--config", str(CONFIG_DIR / "secret-header-valid.yaml"),
                     env={"EDGEAGENT_TEST_API_KEY": "s3cret-k"})
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout and "[REDACTED]" in result.stdout, result.stdout
