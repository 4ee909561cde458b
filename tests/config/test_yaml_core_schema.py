"""Plain scalars resolved as otelcol's yaml.v3 resolves them (YAML 1.2 core schema), not as YAML 1.1."""

from __future__ import annotations

import math

import pytest

from edgeagent.config.document import parse_yaml
from edgeagent.config.loader import load_text


def _value(text: str):
    return parse_yaml(f"key: {text}\n", "test")["key"]


@pytest.mark.parametrize("text", ["on", "off", "On", "OFF", "yes", "no", "NO", "Yes", "y", "n", "Y", "N"])
def test_yaml_1_1_booleans_stay_strings(text):
    assert _value(text) == text


@pytest.mark.parametrize("text, expected", [("true", True), ("True", True), ("TRUE", True),
                                            ("false", False), ("False", False), ("FALSE", False)])
def test_core_schema_booleans(text, expected):
    assert _value(text) is expected


@pytest.mark.parametrize("text", ["1:30", "190:20:30", "2024-01-01", "2001-12-14t21:59:43.10-05:00",
                                  "1.2.3", "0x", "=", "-foo", "_1", "1_000abc"])
def test_sexagesimal_timestamps_and_other_text_stay_strings(text):
    assert _value(text) == text


@pytest.mark.parametrize("text, expected", [("42", 42), ("-7", -7), ("+5", 5), ("1_000", 1000), ("0x1F", 31),
                                            ("0o17", 15), ("0b101", 5), ("-0b11", -3), ("0777", 511), ("0", 0),
                                            ("18446744073709551615", 2**64 - 1)])
def test_integers_as_go_parses_them_after_removing_underscores(text, expected):
    value = _value(text)
    assert value == expected and type(value) is int


@pytest.mark.parametrize("text, expected", [("1.5", 1.5), ("1e3", 1000.0), ("-.5", -0.5), (".5", 0.5),
                                            ("1.", 1.0), ("089", 89.0), ("18446744073709551616", 2.0**64)])
def test_floats_as_yaml_v3_resolves_them(text, expected):
    value = _value(text)
    assert value == expected and type(value) is float


def test_special_floats_and_nulls():
    assert _value(".inf") == math.inf and _value("-.Inf") == -math.inf and math.isnan(_value(".NaN"))
    assert _value("~") is None and _value("null") is None and _value("NULL") is None and _value("") is None
    assert _value("nil") == "nil"


def test_merge_keys_still_merge():
    assert parse_yaml("base: &b {a: 1}\nkey:\n  <<: *b\n  c: 2\n", "test")["key"] == {"a": 1, "c": 2}


def test_header_values_on_and_no_are_sent_as_written_and_bool_fields_take_true():
    text = ("receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:4318\n"
            "exporters:\n  otlp_http:\n    endpoint: http://collector:4318\n    headers:\n"
            "      X-Debug: on\n      X-Sampled: NO\n      X-Window: 1:30\n      X-Day: 2024-01-01\n"
            "    retry_on_failure:\n      enabled: true\n    sending_queue:\n      enabled: False\n"
            "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp_http]\n")
    config = load_text(text, environ={}).exporters["otlp_http"].config
    assert config.headers == {"X-Debug": "on", "X-Sampled": "NO", "X-Window": "1:30", "X-Day": "2024-01-01"}
    assert config.retry_on_failure.enabled is True and config.sending_queue.enabled is False
