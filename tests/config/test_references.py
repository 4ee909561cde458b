"""`${...}` references read as otelcol's confmap reads them (expand.go and its env, file and yaml providers)."""

from __future__ import annotations

import time

import pytest

from edgeagent.config.expand import expand_tree
from edgeagent.config.loader import ConfigError, load_text


def _expand(value, environ=None):
    errors: list = []
    result = expand_tree({"key": value}, (), environ or {}, errors, [])
    return result["key"], [(("::".join(path)), message) for path, message in errors]


def _expanded(value, environ=None):
    result, errors = _expand(value, environ)
    assert errors == []
    return result


def _headers_config(value: str) -> str:
    return ("receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:4318\n"
            "exporters:\n  otlp_http:\n    endpoint: http://collector:4318\n    headers:\n"
            f"      Authorization: {value}\n"
            "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp_http]\n")


def test_file_reference_inside_a_header_is_replaced_by_the_file_text(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret")
    config = load_text(_headers_config(f'"Bearer ${{file:{token}}}"'), environ={})
    assert config.exporters["otlp_http"].config.headers == {"Authorization": "Bearer s3cret"}


def test_file_reference_keeps_the_file_text_verbatim_as_otelcol_does(tmp_path):
    # otelcol's NewRetrievedFromYAML keeps a string's raw bytes: the trailing newline stays.
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    assert _expanded(f"Bearer ${{file:{token}}}") == "Bearer s3cret\n"
    assert _expanded(f"${{file:{token}}}") == "s3cret\n"


def test_whole_value_file_reference_is_read_as_yaml(tmp_path):
    included = tmp_path / "part.yaml"
    included.write_text("endpoint: ${env:EP}\ntls:\n  insecure: true\n")
    assert _expanded(f"${{file:{included}}}", {"EP": "collector:4317"}) == {
        "endpoint": "collector:4317", "tls": {"insecure": True}}


def test_yaml_reference_is_inline_yaml():
    assert _expanded("${yaml:[a, b]}") == ["a", "b"]
    assert _expanded("x-${yaml:[a, b]}") == "x-[a, b]"


def test_unsupported_scheme_is_an_error_naming_the_path_the_scheme_and_the_supported_ones():
    document = {"exporters": {"otlp_http": {"headers": {"Authorization": "Bearer ${vault://secret/token}"}}}}
    errors: list = []
    expand_tree(document, (), {}, errors, [])
    assert len(errors) == 1
    path, message = errors[0]
    assert "::".join(path) == "exporters::otlp_http::headers::Authorization"
    assert "'vault'" in message and all(f"${{{scheme}:...}}" in message
                                       for scheme in ("env", "file", "http", "https", "yaml"))


def test_unsupported_scheme_in_a_config_is_refused_not_sent_literally():
    with pytest.raises(ConfigError) as caught:
        load_text(_headers_config('"Bearer ${s3:bucket/token}"'), environ={})
    assert any(path == "exporters::otlp_http::headers::Authorization" and "'s3'" in message
               for path, message in caught.value.errors)


def test_invalid_environment_variable_name_is_refused_as_otelcol_refuses_it():
    _, errors = _expand("${env:1BAD}")
    assert errors and "'1BAD' is not an environment variable name" in errors[0][1]
    _, errors = _expand("${env:A-B}")
    assert errors and "'A-B'" in errors[0][1]


def test_nested_references_expand_innermost_first():
    environ = {"WHICH": "PROD", "EP_PROD": "prod:4317", "INDIRECT": "${env:EP_PROD}"}
    assert _expanded("${env:EP_${env:WHICH}}", environ) == "prod:4317"
    assert _expanded("${env:UNSET:-${env:WHICH}}", environ) == "PROD"
    assert _expanded("at ${env:INDIRECT}", environ) == "at prod:4317"


def test_a_reference_that_yields_itself_is_an_error_not_a_hang():
    _, errors = _expand("${env:LOOP}", {"LOOP": "x${env:LOOP}"})
    assert errors and ("passes" in errors[0][1] or "longer than" in errors[0][1])


def test_env_value_is_yaml_when_it_is_the_whole_value():
    assert _expanded("${env:LIST}", {"LIST": "[a, b]"}) == ["a", "b"]
    assert _expanded("${env:PLAIN}", {"PLAIN": "k1:9092,k2:9092"}) == "k1:9092,k2:9092"


def test_env_default_applies_only_when_unset_not_when_empty():
    assert _expanded("${env:EMPTY:-fallback}", {"EMPTY": ""}) == ""
    assert _expanded("${env:UNSET:-fallback}") == "fallback"


def test_double_dollar_in_a_variable_value_is_a_literal_dollar_as_escape_dollar_signs_does():
    assert _expanded("${env:PASS}", {"PASS": "a$$b"}) == "a$b"
    assert _expanded("pre ${env:PASS}", {"PASS": "a$$b"}) == "pre a$b"
    assert _expanded("$${env:PASS}", {"PASS": "x"}) == "${env:PASS}"


def test_a_file_that_includes_itself_twice_is_refused_not_expanded_without_bound(tmp_path):
    # Each pass doubles the tree: the references, and the text they read, are bounded per config.
    looping = tmp_path / "loop.yaml"
    looping.write_text(f"a: ${{file:{looping}}}\nb: ${{file:{looping}}}\n")
    _, errors = _expand(f"${{file:{looping}}}")
    assert errors and "references" in errors[0][1]


def test_many_closing_braces_before_a_reference_expand_in_linear_time():
    # Cutting the text after each `}` copied it each time: 9 s here for a 1 MB value, minutes for 4 MiB.
    text = "}" * 1_000_000 + "${env:X}"
    started = time.monotonic()
    assert _expanded(text, {"X": "x"}) == "}" * 1_000_000 + "x"
    assert time.monotonic() - started < 3


_TYPED = ("receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:4318\n"
          "processors:\n  attributes:\n    actions:\n"
          "      - {key: count, action: insert, value: \"${env:COUNT}\"}\n"
          "      - {key: flag, action: insert, value: \"${env:FLAG}\"}\n"
          "exporters:\n  otlp_http:\n    endpoint: http://collector:4318\n    headers: {X-Count: \"${env:COUNT}\"}\n"
          "    sending_queue: {num_consumers: \"${env:CONSUMERS}\", queue_size: \"${env:SIZE}\"}\n"
          "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [attributes]\n"
          "      exporters: [otlp_http]\n")


def test_a_whole_value_reference_has_its_yaml_type_where_the_key_takes_any_value_and_its_text_where_it_takes_text():
    # confmap's useExpandValue: a string field gets the text, any other field the YAML value, so an
    # attribute inserted from ${env:COUNT} is the int 5, as if `value: 5` were written there.
    config = load_text(_TYPED, {"COUNT": "5", "FLAG": "true", "CONSUMERS": "2", "SIZE": "100"})
    values = [action.value for action in config.processors["attributes"].config.actions]
    assert values == [5, True] and [type(value) for value in values] == [int, bool]
    assert config.exporters["otlp_http"].config.headers == {"X-Count": "5"}
    assert type(config.exporters["otlp_http"].config.headers["X-Count"]) is str


def test_a_whole_value_reference_to_a_number_in_yaml_notation_fills_a_number_key():
    # 0x10 and 1_000 are numbers to YAML (and to otelcol), not text that a number key refuses.
    config = load_text(_TYPED, {"COUNT": "5", "FLAG": "true", "CONSUMERS": "0x10", "SIZE": "1_000"})
    queue = config.exporters["otlp_http"].config.sending_queue
    assert (queue.num_consumers, queue.queue_size) == (16, 1000)


def test_a_reference_to_an_empty_variable_reads_as_before_where_the_key_takes_no_text():
    # YAML reads "" as null; a duration key given the empty text is 0, as otelcol's zero value, not "no value".
    config = load_text(_TYPED.replace("{num_consumers: \"${env:CONSUMERS}\",",
                                      "{num_consumers: 2, enabled: \"${env:ON}\",")
                       .replace("    headers:", "    retry_on_failure: {max_elapsed_time: \"${env:EMPTY}\"}\n"
                                                  "    headers:"),
                       {"COUNT": "5", "FLAG": "true", "SIZE": "100", "EMPTY": "", "ON": "true"})
    assert config.exporters["otlp_http"].config.retry_on_failure.max_elapsed_time == 0


def test_a_key_written_a_b_in_a_referenced_map_is_nested_as_in_the_config_itself(tmp_path):
    # confmap flattens and unflattens the expanded config: `::` in a key from ${file:...} nests too.
    part = tmp_path / "exporter.yaml"
    part.write_text("otlp_http::endpoint: http://collector:4318\notlp_http::headers::X-Tenant: acme\n")
    text = _headers_config("x").replace(
        "  otlp_http:\n    endpoint: http://collector:4318\n    headers:\n      Authorization: x\n",
        f"  ${{file:{part}}}\n").replace("exporters:\n  ", "exporters: ")
    exporter = load_text(text, environ={}).exporters["otlp_http"].config
    assert (exporter.endpoint, exporter.headers) == ("http://collector:4318", {"X-Tenant": "acme"})


@pytest.mark.parametrize("token", ["{s3cret}", "[a, b]", "- x", "k: v"])
def test_a_reference_whose_text_reads_as_a_yaml_map_or_list_is_that_text_where_the_key_takes_text(token):
    # confmap keeps a whole-value reference's text beside its YAML value, and a text key takes the text:
    # a token `{s3cret}` is a header value, not a mapping a header cannot hold.
    config = load_text(_headers_config("${env:TOKEN}"), {"TOKEN": token})
    assert config.exporters["otlp_http"].config.headers == {"Authorization": token}


def test_a_reference_inside_a_referenced_map_keeps_its_text_for_a_text_key(tmp_path):
    headers = tmp_path / "headers.yaml"
    headers.write_text("Authorization: ${env:TOKEN}\n")
    text = _headers_config("x").replace("    headers:\n      Authorization: x\n", f"    headers: ${{file:{headers}}}\n")
    config = load_text(text, {"TOKEN": "{s3cret}"})
    assert config.exporters["otlp_http"].config.headers == {"Authorization": "{s3cret}"}
