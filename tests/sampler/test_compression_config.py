"""span_compression configs from tests/testdata/sampler/span_compression: every mistake at its YAML path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sampler.compression import SpanCompressionConfig
from tests.helpers.config_errors import assert_reported

CONFIG_DIR = Path(__file__).resolve().parents[1] / "testdata" / "sampler" / "span_compression"
SEED_KEYS = ["minCompressionCount", "compressionWindowSecs", "maxSpanDurationSecs", "compressOperations",
             "excludeOperations", "sqlPatterns"]

# file -> every (path, words the message must contain) reported, in order
BAD_CONFIGS = {
    "bad-camel-case-keys.yaml": [(f"span_compression::{key}", [repr(key), "min_compression_count", "sql_patterns"])
                                 for key in SEED_KEYS],
    "bad-sql-patterns.yaml": [("span_compression::sql_patterns::1", ["'(SELECT'", "regular expression"]),
                              ("span_compression::sql_patterns::2", ["'[a-'", "regular expression"]),
                              ("span_compression::sql_patterns::3", ["lookaround", "RE2"])],
    "bad-limits.yaml": [("span_compression::min_compression_count", ["2"]),
                        ("span_compression::compression_window_secs", ["0"]),
                        ("span_compression::max_span_duration_secs", ["0"])],
    "bad-operation-in-both-lists.yaml": [("span_compression", ["'GET'", "compress_operations", "exclude_operations"])],
}


def load(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / name).read_text())


def test_every_config_file_is_checked():
    files = {path.name for path in CONFIG_DIR.glob("*.yaml")}
    assert files == set(BAD_CONFIGS) | {"good-seed.yaml", "good-operations-and-patterns.yaml"}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_is_reported_at_its_yaml_path(name):
    assert_reported(SpanCompressionConfig, load(name), "span_compression", BAD_CONFIGS[name])


def test_the_seed_block_in_snake_case_gives_the_defaults_switched_on():
    assert SpanCompressionConfig.model_validate(load("good-seed.yaml")) == SpanCompressionConfig(enabled=True)


def test_operations_and_patterns_are_kept_as_written():
    config = SpanCompressionConfig.model_validate(load("good-operations-and-patterns.yaml"))
    assert config.min_compression_count == 2
    assert config.compression_window_secs == 0.5
    assert config.max_span_duration_secs == 0.05
    assert config.compressed_names == {"SELECT users", "GET"}
    assert config.excluded_names == {"COMMIT"}
    assert [pattern.pattern for pattern in config.compiled_sql_patterns] == [
        r"^SELECT \* FROM users WHERE id = \d+$", "^INSERT INTO audit "]


def test_defaults_leave_compression_off():
    config = SpanCompressionConfig()
    assert (config.enabled, config.min_compression_count, config.compression_window_secs,
            config.max_span_duration_secs) == (False, 3, 60, 60)
    assert config.compress_operations == config.exclude_operations == config.sql_patterns == []


def test_without_the_re2_package_sql_patterns_are_a_config_error_that_says_how_to_get_it():
    script = ("import sys; sys.modules['re2'] = None\n"
              "from sampler.compression import SpanCompressionConfig\n"
              "SpanCompressionConfig(enabled=True)\n"  # no patterns: no need of RE2
              "try:\n    SpanCompressionConfig.model_validate({'sql_patterns': ['^SELECT']})\n"
              "except ValueError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert "sql_patterns.0" in done.stdout and "pip install google-re2" in done.stdout
