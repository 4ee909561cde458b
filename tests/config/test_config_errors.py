"""Common config mistakes through `edgeagent validate`: each is reported at its YAML path.

Each tests/testdata/config/bad-*.yaml is a small config with one mistake (the last one
has three). Messages are free-form; only the path and a key word or two are checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CONFIG_DIR = Path(__file__).resolve().parents[1] / "testdata" / "config"

# file -> (errors that must be reported, errors that may also be reported)
BAD_CONFIGS = {
    "bad-unknown-top-level-key.yaml": ([("telemetry", [])], []),
    # The message lists the supported receiver types.
    "bad-unknown-receiver-type.yaml": ([("receivers::zipkin", ["otlp"])], []),
    # The typo is named; the then missing endpoint may be reported as well.
    "bad-exporter-key-typo.yaml": (
        [("exporters::otlphttp::endpiont", ["endpiont"])],
        [("exporters::otlphttp::*", ["endpoint"])],
    ),
    "bad-duration.yaml": ([("exporters::otlphttp::timeout", ["duration"])], []),
    "bad-negative-num-consumers.yaml": ([("exporters::otlphttp::sending_queue::num_consumers", [])], []),
    # the unset variable is named by a warning before the error (test_unset_variables.py)
    "bad-env-unset-limit.yaml": ([("processors::memory_limiter", ["limit_mib"])], []),
    "bad-undefined-exporter.yaml": ([("service::pipelines::traces::exporters", ["otlphttp/backup"])], []),
    "bad-undefined-processor.yaml": ([("service::pipelines::traces::processors", ["memory_limiter"])], []),
    "bad-undefined-extension.yaml": ([("service::extensions::*", ["file_storage"])], []),
    "bad-attributes-unknown-action.yaml": ([("processors::attributes::actions::*", ["upsert"])], []),
    "bad-attributes-missing-key.yaml": ([("processors::attributes::actions::*", ["key"])], []),
    "bad-attributes-no-match-type.yaml": ([("processors::attributes::include", ["match_type", "strict"])], []),
    "bad-attributes-library-regexp.yaml": ([("processors::attributes::exclude", ["1.("])], []),
    "bad-memory-limiter-zero.yaml": ([("processors::memory_limiter::*", ["limit_mib"])], []),
    "bad-memory-limiter-spike.yaml": ([("processors::memory_limiter::*", ["spike_limit_mib"])], []),
    "bad-exporter-no-endpoint.yaml": ([("exporters::otlphttp::*", ["endpoint"])], []),
    "bad-compression.yaml": ([("exporters::otlphttp::compression", [])], []),
    "bad-pipeline-no-receivers.yaml": ([("service::pipelines::logs::receivers", [])], []),
    "bad-pipeline-unknown-signal.yaml": ([("service::pipelines::spans", ["spans"])], []),
    "bad-auth-unknown-authenticator.yaml": (
        [("receivers::otlp::protocols::http::auth::authenticator", ["bearertokenauth/clients", "extensions"])], []),
    "bad-auth-extension-not-enabled.yaml": (
        [("exporters::otlphttp::auth::authenticator", ["bearertokenauth", "service::extensions"])], []),
    "bad-auth-not-an-authenticator.yaml": (
        [("receivers::otlp::protocols::grpc::auth::authenticator", ["health_check", "not an authenticator"])], []),
    "bad-file-storage-two-budgets.yaml": ([("extensions::file_storage::*", ["max_size", "max_size_mib"])], []),
    "bad-file-storage-permissions.yaml": ([("extensions::file_storage::directory_permissions", ["octal"])], []),
    "bad-wait-for-result-with-storage.yaml": (
        [("exporters::otlphttp::sending_queue::*", ["wait_for_result", "storage"])], []),
    "bad-block-on-overflow-drop-oldest.yaml": (
        [("exporters::otlphttp::sending_queue::block_on_overflow", ["drop_oldest"])], []),
    "bad-wait-for-result-behind-tail-sampling.yaml": (
        [("exporters::otlphttp::sending_queue::wait_for_result", ["tail_sampling"])], []),
    "bad-bearertokenauth-no-token.yaml": ([("extensions::bearertokenauth", ["token", "filename"])], []),
    "bad-tls-missing-key-file.yaml": ([("receivers::otlp::protocols::grpc::tls", ["key_file"])], []),
    "bad-tls-version.yaml": ([("exporters::otlphttp::tls", ["min_version", "1.4"])], []),
    "bad-receiver-transport.yaml": (
        [("receivers::otlp::protocols::http::transport", ["udp", "stream"]),
         ("receivers::otlp::protocols::grpc::endpoint", ["107 bytes"])], []),
    "bad-receiver-middlewares.yaml": (
        [("receivers::otlp::protocols::grpc::middlewares", ["headers_setter", "no middleware extensions"]),
         ("receivers::otlp::protocols::http::middlewares", ["health_check", "HTTP server middleware"])], []),
    "bad-health-check-auth-unknown.yaml": (
        [("extensions::health_check::auth::authenticator", ["bearertokenauth/probes", "not defined"])], []),
    "bad-health-check-v2.yaml": (
        [("extensions::health_check::use_v2", ["feature gate"]),
         ("extensions::health_check::http", ["extension.healthcheck.useComponentStatus"]),
         ("extensions::health_check::grpc", ["feature gate"]),
         ("extensions::health_check::path", ["must start with /"])], []),
    # mistakes in otelcol's periodic metric reader, each refused with its fix
    "bad-telemetry-periodic-readers.yaml": (
        [("service::telemetry::metrics::readers::0::periodic::interval", ["milliseconds"]),
         ("service::telemetry::metrics::readers::1::periodic::exporter::otlp", ["certificate", "https://"]),
         ("service::telemetry::metrics::readers::2::periodic::exporter", ["exactly one exporter"]),
         ("service::telemetry::metrics::readers::3::periodic::exporter::otlp::protocol", ["grpc"])], []),
    "bad-three-mistakes.yaml": (
        [
            ("receivers::otlp::protocols::grcp", ["grcp"]),
            ("processors::batch::timeout", ["duration"]),
            ("service::pipelines::logs::exporters", ["otlphttp/archive"]),
        ],
        [],
    ),
}

API_KEY = "tfk-8c1e0b7d.tfs-a94f2e6031"
LITERAL_TOKEN = "literal-token-7d41c0e9b2"  # written in the secret-*.yaml files themselves


def test_every_bad_config_file_has_a_case():
    on_disk = {path.name for path in CONFIG_DIR.glob("bad-*.yaml")}
    assert on_disk - {"bad-yaml-syntax.yaml"} == set(BAD_CONFIGS)


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_reports_error_at_path(name, validate, assert_errors):
    expected, optional = BAD_CONFIGS[name]
    result = validate(CONFIG_DIR / name)
    assert_errors(result, expected, optional)


def test_three_mistakes_are_all_reported_in_one_run(validate, assert_errors):
    result = validate(CONFIG_DIR / "bad-three-mistakes.yaml")
    assert_errors(result, BAD_CONFIGS["bad-three-mistakes.yaml"][0])
    assert len(result.errors) == 3, result.describe()


def test_yaml_syntax_error_names_file_and_line(validate):
    path = CONFIG_DIR / "bad-yaml-syntax.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    line = next(number for number, text in enumerate(lines, 1) if "compression: gzip" in text)
    result = validate(path)
    assert result.returncode == 1, result.describe()
    assert len(result.errors) == 1, result.describe()
    error = result.error_lines[0]
    assert path.name in error, result.describe()
    assert re.search(rf"(:{line}(:|\b)|line {line}\b)", error), f"line {line} not reported\n{result.describe()}"


def test_missing_config_file_is_an_error(validate, tmp_path):
    missing = tmp_path / "no-such-config.yaml"
    result = validate(missing)
    assert result.returncode != 0, result.describe()
    assert "no-such-config.yaml" in result.stderr, result.describe()


# --- what is valid ---------------------------------------------------------------------------

def test_minimal_config_is_valid(validate, assert_valid):
    assert_valid(validate(CONFIG_DIR / "good-minimal.yaml"))


def test_receiver_on_a_unix_socket_and_on_ipv6_only_is_valid_and_its_dialer_a_warning(validate, assert_valid):
    result = validate(CONFIG_DIR / "good-otlp-transports.yaml")
    assert_valid(result)
    assert "protocols::grpc::dialer has no effect on a server" in result.output, result.describe()


def test_health_check_keys_otelcol_ignores_are_valid_with_a_warning(validate, assert_valid):
    result = validate(CONFIG_DIR / "good-health-check-otelcol-keys.yaml")
    assert_valid(result)
    assert "check_collector_pipeline has no effect" in result.output, result.describe()
    assert "component_health has no effect" in result.output, result.describe()
    assert "response_headers has no effect on the health check" in result.output, result.describe()


def test_attribute_action_keys_otelcol_ignores_are_valid_with_a_warning(validate, assert_valid):
    result = validate(CONFIG_DIR / "good-attributes-otelcol-ignored-keys.yaml")
    assert_valid(result)
    for words in ("processors::attributes: actions::0::from_context has no effect",
                  "processors::attributes: actions::1::default_value has no effect",
                  "processors::attributes: actions::2::default_value has no effect",
                  "processors::attributes: actions::3::default_value has no effect",
                  "processors::resource: attributes::0::from_context has no effect"):
        assert words in result.output, result.describe()


def test_attribute_selection_by_resources_in_a_metrics_pipeline_is_valid_with_a_warning(validate, assert_valid):
    """otelcol 0.165 selects metrics by metric_names alone: `resources` there is read for the
    processor's traces and logs and silently not for metrics. The warning names the key, once for
    all the metrics pipelines the processor serves, and not for a processor serving traces only."""
    result = validate(CONFIG_DIR / "good-attributes-resources-in-metrics.yaml")
    assert_valid(result)
    for key in ("include", "exclude"):
        words = f"processors::attributes/metrics::{key}::resources: has no effect in metrics pipelines"
        assert result.output.count(words) == 1, result.describe()
    assert "attributes/traces::include::resources" not in result.output, result.describe()


def test_otelcols_queue_storage_and_default_value_keys_are_valid(validate, assert_valid):
    assert_valid(validate(CONFIG_DIR / "good-otelcol-queue-and-storage-keys.yaml"))


def test_otelcols_periodic_metric_readers_are_valid(validate, assert_valid):
    assert_valid(validate(CONFIG_DIR / "good-telemetry-periodic-readers.yaml"))


def test_periodic_reader_keys_otelcol_ignores_are_valid_with_a_warning(validate, assert_valid):
    """otelcol 0.165 takes these and does nothing with them: a config it runs runs here, and the
    warning says the key does nothing."""
    result = validate(CONFIG_DIR / "good-telemetry-periodic-readers-ignored.yaml")
    assert_valid(result)
    for words in ("readers::0::periodic::exporter::otlp::default_histogram_aggregation has no effect",
                  "readers::1::periodic::exporter::console::indent: has no effect",
                  "readers::1::producers: has no effect"):
        assert words in result.output, result.describe()


def test_memory_limiter_without_check_interval_is_a_warning(validate, assert_valid):
    result = validate(CONFIG_DIR / "good-memory-limiter-no-interval.yaml")
    assert_valid(result)
    assert "warning" in result.output.lower(), result.describe()
    assert "check_interval" in result.output, result.describe()
    # kept lenient where otelcol refuses: the seed guide's memory_limiter blocks have no check_interval
    assert "add check_interval: 1s" in result.output, result.describe()


# --- environment expansion -------------------------------------------------------------------

def test_env_defaults_are_used_when_unset(validate, assert_valid):
    # ${env:VAR:-default} and ${VAR:-default}, for strings, a duration, a bool and an int.
    assert_valid(validate(CONFIG_DIR / "good-env-default.yaml"))


def test_env_value_is_used_when_set(validate, assert_valid):
    assert_valid(validate(CONFIG_DIR / "env-timeout.yaml", env={"EDGEAGENT_TEST_TIMEOUT": "250ms"}))


def test_env_default_is_validated_like_a_literal(validate, assert_valid, assert_errors):
    assert_valid(validate(CONFIG_DIR / "env-timeout.yaml"))
    result = validate(CONFIG_DIR / "env-timeout.yaml", env={"EDGEAGENT_TEST_TIMEOUT": "10 seconds"})
    assert_errors(result, [("exporters::otlphttp::timeout", ["duration"])])


def test_env_var_without_default_is_read_when_set(validate, assert_valid):
    result = validate(CONFIG_DIR / "bad-env-unset-limit.yaml", env={"EDGEAGENT_TEST_UNSET_LIMIT": "100"})
    assert_valid(result)
    assert "EDGEAGENT_TEST_UNSET_LIMIT" not in result.output, result.describe()


def test_double_dollar_is_a_literal_dollar(validate, assert_valid):
    # otelcol: `$$` is an escaped `$`, so "$${env:X}" is literal text and X is never looked up.
    assert_valid(validate(CONFIG_DIR / "good-dollar-escape.yaml"))


# --- secrets ---------------------------------------------------------------------------------

def _assert_no_secret(result):
    assert API_KEY not in result.output, f"the Authorization value was printed\n{result.describe()}"
    assert LITERAL_TOKEN not in result.output, f"a header value was printed\n{result.describe()}"


def test_secret_header_not_printed_when_valid(validate, assert_valid):
    result = validate(CONFIG_DIR / "secret-header-valid.yaml", env={"EDGEAGENT_TEST_API_KEY": API_KEY})
    assert_valid(result)
    _assert_no_secret(result)


def test_secret_header_not_printed_when_other_settings_are_wrong(validate, assert_errors):
    result = validate(CONFIG_DIR / "secret-header-with-error.yaml", env={"EDGEAGENT_TEST_API_KEY": API_KEY})
    assert_errors(result, [
        ("processors::batch::timeout", ["duration"]),
        ("exporters::otlphttp::timeout", ["duration"]),
    ])
    _assert_no_secret(result)


def test_secret_under_misspelled_headers_key_not_printed(validate, assert_errors):
    result = validate(CONFIG_DIR / "secret-misspelled-headers.yaml", env={"EDGEAGENT_TEST_API_KEY": API_KEY})
    assert_errors(result, [("exporters::otlphttp::header", ["header"])])
    _assert_no_secret(result)


@pytest.mark.parametrize("name,expected", [
    ("secret-bearertoken-valid.yaml", None),
    # the misspelled `tokn` is named, its value is not
    ("secret-bearertoken-with-error.yaml", [("exporters::otlphttp::timeout", ["duration"]),
                                            ("extensions::bearertokenauth/upstream::tokn", ["tokn"])]),
    ("secret-endpoint-password.yaml", [("exporters::otlphttp::endpoint", ["ftp://edge:***@"])]),
    ("secret-endpoint-port.yaml", [("exporters::otlphttp::endpoint", ["99999", "edge:***@", "token=***"])]),
])
def test_tokens_and_passwords_never_printed(name, expected, validate, assert_valid, assert_errors):
    result = validate(CONFIG_DIR / name, env={"EDGEAGENT_TEST_API_KEY": API_KEY})
    assert_valid(result) if expected is None else assert_errors(result, expected)
    _assert_no_secret(result)
