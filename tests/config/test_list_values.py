"""List keys read as otelcol's decoder reads them (mapstructure.StringToSliceHookFunc(",")), and type
errors as sentences naming the path and the form expected."""

from __future__ import annotations

import pytest

from edgeagent.config.loader import ConfigError, load_text

_RECEIVER = "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:4318\n{cors}"


def _kafka_config(brokers: str, cors: str = "") -> str:
    return (_RECEIVER.format(cors=cors) + "exporters:\n  kafka:\n"
            f"    brokers: {brokers}\n"
            "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [kafka]\n")


def _errors(text: str, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, environ=environ or {})
    return caught.value.errors


def test_comma_separated_brokers_from_the_environment_are_a_list():
    config = load_text(_kafka_config("${env:BROKERS}"), environ={"BROKERS": "k1:9092,k2:9092"})
    assert config.exporters["kafka"].config.brokers == ["k1:9092", "k2:9092"]


def test_a_yaml_list_in_the_environment_is_a_list():
    config = load_text(_kafka_config("${env:BROKERS}"), environ={"BROKERS": "[k1:9092, k2:9092]"})
    assert config.exporters["kafka"].config.brokers == ["k1:9092", "k2:9092"]


def test_comma_separated_string_splits_for_every_list_of_strings_key():
    cors = "        cors:\n          allowed_origins: https://a.example,https://*.b.example\n"
    config = load_text(_kafka_config("k1:9092", cors), environ={})
    http = config.receivers["otlp"].config.protocols.http
    assert http.cors.allowed_origins == ["https://a.example", "https://*.b.example"]
    assert config.exporters["kafka"].config.brokers == ["k1:9092"]


def test_pipeline_lists_split_too():
    text = (_RECEIVER.format(cors="") + "exporters:\n  debug:\n  debug/2:\n"
            "service:\n  pipelines:\n    traces:\n      receivers: otlp\n      exporters: debug,debug/2\n")
    assert load_text(text, environ={}).pipelines[0].exporters == ["debug", "debug/2"]


def test_a_list_given_a_map_is_a_sentence_naming_the_path_and_the_form():
    errors = _errors(_kafka_config("{a: b}"))
    assert errors == [("exporters::kafka::brokers",
                       "expected a list such as [a, b] or the text a,b; got a mapping")]


def test_int_and_bool_type_errors_are_sentences():
    text = (_RECEIVER.format(cors="") + "exporters:\n  otlp_http:\n    endpoint: http://collector:4318\n"
            "    sending_queue:\n      num_consumers: many\n      enabled: maybe\n"
            "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp_http]\n")
    errors = dict(_errors(text))
    queue = "exporters::otlp_http::sending_queue"
    assert errors[f"{queue}::num_consumers"] == "expected a whole number such as 10; got text"
    assert errors[f"{queue}::enabled"] == "expected true or false; got text"
