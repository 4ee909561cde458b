"""Scalar values read as otelcol 0.165 reads them (confmap's decoder over mapstructure), so that a
config it runs runs here with the same meaning, and a number it would wrap around is refused.

Each case is a YAML file under tests/testdata/config/scalars/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeagent.config.loader import AgentConfig, ConfigError, load_text

SCALARS = Path(__file__).resolve().parents[1] / "testdata" / "config" / "scalars"


def _load(name: str) -> AgentConfig:
    return load_text((SCALARS / name).read_text(encoding="utf-8"), environ={})


def _errors(name: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        _load(name)
    return dict(caught.value.errors)


def test_fraction_for_a_whole_number_is_truncated_as_otelcol_does_not_refused():
    config = _load("good-fractions.yaml")
    sampling = config.processors["tail_sampling"].config
    assert (sampling.num_traces, sampling.expected_new_traces_per_sec) == (100, 2)
    latency, span_count = sampling.policies
    assert latency.latency.threshold_ms == 1
    assert span_count.span_count.min_spans == -2  # toward zero, as Go's int64(-2.7)
    assert config.exporters["otlp_http"].config.sending_queue.queue_size == 10


def test_null_number_text_bool_and_duration_are_their_zero_and_null_lists_keep_defaults():
    config = _load("good-nulls.yaml")
    sampling = config.processors["tail_sampling"].config
    assert sampling.decision_wait_after_root_received == 0.0
    assert sampling.policies[0].latency.threshold_ms == 0
    assert config.processors["batch"].config.send_batch_max_size == 0
    http = config.exporters["otlp_http"].config
    assert http.compression == ""  # otelcol's "no compression"
    assert http.force_attempt_http2 is False  # true by default
    assert http.keepalive.max_idle_conns == 0  # Go's int: no limit, not the default of 100
    assert http.traces_endpoint is None  # text that may be unset stays unset
    kafka = config.exporters["kafka"].config
    assert kafka.brokers == ["localhost:9092"]  # a list keeps its default
    assert kafka.client_id == ""


def test_bare_number_duration_is_nanoseconds_as_in_otelcol_not_seconds():
    config = _load("good-bare-durations.yaml")
    sampling = config.processors["tail_sampling"].config
    assert sampling.decision_wait == pytest.approx(5.0)
    assert sampling.decision_wait_after_root_received == pytest.approx(1e-9)  # 1.5ns truncated to 1ns
    assert config.processors["batch"].config.timeout == 5400.0
    assert config.exporters["otlp_http"].config.timeout == 1.5


def test_quoted_number_and_bool_stay_accepted_with_their_unquoted_meaning():
    config = _load("good-quoted-scalars.yaml")
    assert config.processors["tail_sampling"].config.num_traces == 100
    assert config.exporters["otlp_http"].config.sending_queue.enabled is True


def test_number_beyond_the_go_type_of_the_setting_is_refused_not_wrapped():
    errors = _errors("bad-beyond-go-width.yaml")
    ranges = {
        "processors::batch::send_batch_size": "0 to 4294967295",
        "processors::memory_limiter::limit_mib": "0 to 4294967295",
        "processors::tail_sampling::policies::0::span_count::min_spans": "-2147483648 to 2147483647",
        "processors::tail_sampling::policies::1::latency::threshold_ms": "-9223372036854775808 to 9223372036854775807",
        "exporters::otlp_http::sending_queue::queue_size": "-9223372036854775808 to 9223372036854775807",
    }
    for path, words in ranges.items():
        assert words in errors.get(path, ""), f"{path}: {errors.get(path)!r}\n{errors}"
    assert "processors::tail_sampling::expected_new_traces_per_sec" in errors, errors
    assert set(errors) == set(ranges) | {"processors::tail_sampling::expected_new_traces_per_sec"}, errors


@pytest.mark.parametrize("environ", [{}, {"EDGEAGENT_TEST_EMPTY": ""}], ids=["unset", "empty"])
def test_empty_variable_for_a_number_or_bool_is_its_zero_not_refused_as_text(environ):
    text = (SCALARS / "good-empty-variable.yaml").read_text(encoding="utf-8")
    config = load_text(text, environ=environ)
    batch = config.processors["batch"].config
    assert (batch.send_batch_max_size, batch.timeout) == (0, 0.0)
    assert config.exporters["otlp_http"].config.force_attempt_http2 is False  # true by default


def test_bare_number_duration_under_a_millisecond_is_warned_of_as_likely_meant_as_seconds(caplog):
    """`timeout: 30` is 30ns to otelcol, and so here: the agent runs as otelcol would, but says so,
    since a timeout of nanoseconds fails every call."""
    text = (SCALARS / "good-bare-durations.yaml").read_text(encoding="utf-8").replace("timeout: 1.5s", "timeout: 30")
    with caplog.at_level("WARNING"):
        config = load_text(text, environ={})
    assert config.exporters["otlp_http"].config.timeout == pytest.approx(30e-9)
    warned = [record.getMessage() for record in caplog.records if "30ns" in record.getMessage()]
    assert warned and "30s" in warned[0], caplog.text
    # 5000000000 (5s) is plainly nanoseconds
    assert not [record for record in caplog.records if "5000000000" in record.getMessage()]
