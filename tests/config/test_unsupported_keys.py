"""otelcol 0.165 keys edgeagent does not implement are refused naming the key and saying why, not
as typos; and every key the table lists is one our models indeed refuse."""

from __future__ import annotations

import pytest
import yaml

from edgeagent.config import unsupported
from edgeagent.config.loader import ConfigError, load_text

BASES = {
    ("receivers", "kafka"): {}, ("exporters", "kafka"): {},
    ("exporters", "otlp_http"): {"endpoint": "http://collector:4318"},
    ("exporters", "otlp_grpc"): {"endpoint": "collector:4317"},
    ("processors", "filter"): {},
}


def _document(kind: str, type_name: str, settings: dict) -> str:
    section = {kind: {type_name: settings}}
    exporters = {"debug": {}} if kind != "exporters" else {}
    receivers = {"otlp": {"protocols": {"http": {}}}} if kind != "receivers" else {}
    pipeline = {"receivers": [type_name if kind == "receivers" else "otlp"],
                "exporters": [type_name if kind == "exporters" else "debug"]}
    if kind == "processors":
        pipeline["processors"] = [type_name]
    document = {"receivers": receivers, "exporters": exporters, **section,
                "service": {"pipelines": {"traces": pipeline}}}
    for key in ("receivers", "exporters"):
        document[key] = {**document.get(key, {}), **section.get(key, {})}
    return yaml.safe_dump(document)


def _nested(path: str) -> dict:
    node: object = "x"
    for part in reversed(path.split("::")):
        node = {part: node}
    assert isinstance(node, dict)
    return node


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def _errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, environ={})
    return caught.value.errors


@pytest.mark.parametrize("component, path", [(component, path) for component, paths in unsupported._KEYS.items()
                                             for path in paths])
def test_every_listed_key_is_refused_as_an_otelcol_key_edgeagent_does_not_implement(component, path):
    kind, type_name = component
    errors = _errors(_document(kind, type_name, _merge(BASES[component], _nested(path))))
    assert any("is an otelcol 0.165 key, but" in message and path.split("::")[0] in where + message
               for where, message in errors), errors


def test_the_reason_is_given_and_a_typo_stays_a_typo():
    settings = {"endpoint": "http://c:4318", "dialer_middleware": {"id": "x"}}
    errors = _errors(_document("exporters", "otlp_http", settings))
    assert any("pkg.configmiddleware.CustomTCPRouting" in message for _, message in errors), errors
    errors = _errors(_document("exporters", "otlp_http", {"endpoint": "http://c:4318", "endpiont": "x"}))
    assert any("unknown key 'endpiont'" in message for _, message in errors), errors


def test_a_misspelt_key_names_the_nearest_valid_key_first():
    # otlp_http takes 25 keys: the one meant must not hide among them
    errors = _errors(_document("exporters", "otlp_http", {"endpoint": "http://c:4318", "timout": "5s",
                                                           "sending_queue": {"num_consumer": 2}}))
    messages = dict(errors)
    timeout = messages["exporters::otlp_http::timout"]
    assert timeout.startswith("unknown key 'timout' (did you mean 'timeout'?); supported keys"), timeout
    assert "did you mean 'num_consumers'?" in messages["exporters::otlp_http::sending_queue::num_consumer"]
    errors = _errors(_document("exporters", "otlp_http", {"endpoint": "http://c:4318", "zzzz": 1}))
    assert "did you mean" not in dict(errors)["exporters::otlp_http::zzzz"]


def test_a_misspelt_top_level_key_or_component_type_names_the_nearest_one():
    errors = dict(_errors("recievers: {}\nexporters: {otlphtp: {}}\nservice: {pipelines: {}}\n"))
    assert "did you mean 'receivers'?" in errors["recievers"], errors
    assert "did you mean 'otlp_http'?" in errors["exporters::otlphtp"], errors


def test_a_misspelt_component_id_in_the_service_names_the_defined_one():
    errors = dict(_errors("receivers: {otlp: {protocols: {http: {endpoint: 127.0.0.1:4318}}}}\n"
                          "exporters: {otlp_http/main: {endpoint: http://c:4318}}\n"
                          "extensions: {health_check: {}}\n"
                          "service: {extensions: [health_chek], pipelines: {traces: {receivers: [otlp], "
                          "exporters: [otlp_http/mian]}}}\n"))
    assert "'otlp_http/mian' is not defined under exporters (did you mean 'otlp_http/main'?)" in \
        errors["service::pipelines::traces::exporters"], errors
    assert "(did you mean 'health_check'?)" in errors["service::extensions::0"], errors


def test_an_unknown_key_in_a_tail_sampling_policy_is_said_to_be_an_extension_policy():
    """otelcol 0.165 refuses a scalar there (its policy extension settings are a mapping); a mapping it
    keeps and ignores, which edgeagent accepts with a warning (tests/testdata/sampler/ignored-policies.yaml)."""
    settings = {"policies": [{"name": "p", "type": "always_sample", "my_extension": 1}]}
    errors = _errors(_document("processors", "tail_sampling", settings))
    assert any("policy extension" in message and "my_extension" in message for _, message in errors), errors
