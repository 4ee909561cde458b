"""The collector configs from the deployment guides (tests/testdata/seeds) through `edgeagent validate`.

EXPECTED below is the single place that says what each seed must give today. When a
later version supports more (TLS, the `otlp` exporter, ...), flip the entry here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SEEDS_DIR = Path(__file__).resolve().parents[1] / "testdata" / "seeds"

API_KEY = "tfk-3f9a61c2.tfs-5be0d7a4e8"

# The variables the seeds reference, as a deployment would set them.
SEED_ENV = {
    "TELEMETRYFLOW_ENDPOINT": "http://127.0.0.1:4318",
    "TELEMETRYFLOW_WORKSPACE_ID": "550e8400-e29b-41d4-a716-446655440000",
    "TELEMETRYFLOW_TENANT_ID": "660e8400-e29b-41d4-a716-446655440001",
    "TELEMETRYFLOW_API_KEY": API_KEY,
    "EDGE_LOCATION": "store-0042",
    "REGION": "us-east-1",
}

VALID = "valid"

# seed file -> VALID, or the complete list of errors it must report: (path, [keywords]).
# A path ending in `::*` also accepts any path below it (see conftest.py).
EXPECTED: dict[str, object] = {
    # Complete configs: must validate as they are.
    "tfo-hub-agent.yaml": VALID,
    "tfo-hub-collector.yaml": VALID,
    "tfo-direct.yaml": VALID,
    "tfo-edge-buffering.yaml": VALID,
    # Partial block: the pipeline uses an `otlp` receiver and a `batch` processor that the
    # block does not define (the guide assumes them from another block).
    "tfo-multi-region-routing.yaml": [
        ("service::pipelines::metrics::receivers", ["otlp"]),
        ("service::pipelines::metrics::processors", ["batch"]),
    ],
    # Partial block (no service). `client_auth_type: RequireAndVerifyClientCert` is not an otelcol
    # TLS setting (otelcol refuses the key); it says what client_ca_file does anyway, so it is
    # accepted with a warning.
    "tfo-tls.yaml": [("service::*", [])],
    # Troubleshooting snippets: a fragment each, so only the missing service is wrong.
    "tfo-troubleshooting-memory-limiter.yaml": [("service::*", [])],
    "tfo-troubleshooting-batch-size.yaml": [("service::*", [])],
    "tfo-troubleshooting-batch-timeout.yaml": [("service::*", [])],
    # ... and this one also has an otlphttp exporter without an endpoint.
    "tfo-troubleshooting-exporter-consumers.yaml": [
        ("exporters::otlphttp::*", ["endpoint"]),
        ("service::*", []),
    ],
}

FULL_SEEDS = sorted(name for name, outcome in EXPECTED.items() if outcome == VALID)
PARTIAL_SEEDS = sorted(name for name, outcome in EXPECTED.items() if outcome != VALID)


def test_every_seed_has_an_expected_outcome():
    on_disk = {path.name for path in SEEDS_DIR.glob("*.yaml")}
    assert on_disk == set(EXPECTED), "add new seed files to EXPECTED (and to the seeds README)"
    readme = (SEEDS_DIR / "README.md").read_text(encoding="utf-8")
    assert [name for name in sorted(on_disk) if name not in readme] == []


@pytest.mark.parametrize("seed", FULL_SEEDS)
def test_full_seed_config_is_valid(seed, validate, assert_valid):
    result = validate(SEEDS_DIR / seed, env=SEED_ENV)
    assert_valid(result)
    assert API_KEY not in result.output, "the Authorization header value must never be printed"


@pytest.mark.parametrize("seed", PARTIAL_SEEDS)
def test_partial_seed_config_fails_precisely(seed, validate, assert_errors):
    result = validate(SEEDS_DIR / seed, env=SEED_ENV)
    assert_errors(result, EXPECTED[seed])
    assert API_KEY not in result.output


def test_seed_without_memory_limiter_interval_warns(validate, assert_valid):
    # None of the guide's memory_limiter blocks sets check_interval: accepted, with a warning.
    result = validate(SEEDS_DIR / "tfo-hub-agent.yaml", env=SEED_ENV)
    assert_valid(result)
    assert "check_interval" in result.output


def _warning_naming(result, name: str) -> str:
    """The one warning line naming the unset variable `name` (otelcol reads it as empty and warns)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:") and name in line]
    assert len(lines) == 1, result.describe()
    return lines[0]


def test_edge_buffering_seed_runs_with_edge_location_unset_and_names_it(validate, assert_valid):
    env = {key: value for key, value in SEED_ENV.items() if key != "EDGE_LOCATION"}
    result = validate(SEEDS_DIR / "tfo-edge-buffering.yaml", env=env)
    assert_valid(result)
    assert "processors::attributes::actions::" in _warning_naming(result, "EDGE_LOCATION")


def test_direct_seed_runs_with_its_header_variables_unset_and_names_them(validate, assert_valid):
    # the guide's `X-Workspace-Id: "${env:TELEMETRYFLOW_WORKSPACE_ID}"`: otelcol runs with it unset
    env = {key: value for key, value in SEED_ENV.items()
           if key not in ("TELEMETRYFLOW_API_KEY", "TELEMETRYFLOW_WORKSPACE_ID")}
    result = validate(SEEDS_DIR / "tfo-direct.yaml", env=env)
    assert_valid(result)
    assert "exporters::otlphttp/telemetryflow::headers::Authorization" in _warning_naming(
        result, "TELEMETRYFLOW_API_KEY")
    assert "exporters::otlphttp/telemetryflow::headers::X-Workspace-Id" in _warning_naming(
        result, "TELEMETRYFLOW_WORKSPACE_ID")


def test_seed_env_var_used_in_several_places_is_named_once_with_each_place(validate, assert_valid):
    # TELEMETRYFLOW_TENANT_ID appears in an attributes action and in an exporter header.
    env = {key: value for key, value in SEED_ENV.items() if key != "TELEMETRYFLOW_TENANT_ID"}
    result = validate(SEEDS_DIR / "tfo-hub-collector.yaml", env=env)
    assert_valid(result)
    warning = _warning_naming(result, "TELEMETRYFLOW_TENANT_ID")
    assert "processors::attributes::actions::" in warning, warning
    assert "exporters::otlphttp/telemetryflow::headers::X-Tenant-Id" in warning, warning


# Each partial block, merged (a second --config) onto the complete config of the guide it fixes or extends.
SNIPPET_BASES = [
    ("tfo-multi-region-routing.yaml", "tfo-hub-collector.yaml"),
    ("tfo-multi-region-routing.yaml", "tfo-edge-buffering.yaml"),
    ("tfo-tls.yaml", "tfo-direct.yaml"),
    ("tfo-tls.yaml", "tfo-edge-buffering.yaml"),
    ("tfo-troubleshooting-memory-limiter.yaml", "tfo-hub-collector.yaml"),
    ("tfo-troubleshooting-batch-size.yaml", "tfo-hub-collector.yaml"),
    ("tfo-troubleshooting-batch-timeout.yaml", "tfo-hub-agent.yaml"),
    ("tfo-troubleshooting-exporter-consumers.yaml", "tfo-hub-agent.yaml"),
]


@pytest.mark.parametrize("snippet,base", SNIPPET_BASES)
def test_partial_seed_merged_onto_its_full_config_is_valid(snippet, base, validate, assert_valid):
    result = validate(SEEDS_DIR / base, env=SEED_ENV, merged=[SEEDS_DIR / snippet])
    assert_valid(result)
    assert API_KEY not in result.output


def test_tls_seed_client_auth_type_is_accepted_with_a_warning(validate, assert_valid):
    result = validate(SEEDS_DIR / "tfo-direct.yaml", env=SEED_ENV, merged=[SEEDS_DIR / "tfo-tls.yaml"])
    assert_valid(result)
    assert "client_auth_type" in result.output
