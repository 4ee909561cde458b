"""Hostile config documents: parsing stays bounded and every mistake is a clear error, never a traceback."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.config.document import unflatten
from edgeagent.config.loader import ConfigError, load_text

PIPELINE = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: {receiver}
exporters:
  otlphttp:
    endpoint: {exporter}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"""


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + f"\nreceivers:\n  otlp: *a{levels - 1}\n"


def _write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_alias_bomb_is_refused_in_well_under_a_second_naming_the_limit(tmp_path, validate):
    path = _write(tmp_path, _alias_bomb())
    started = time.monotonic()
    result = validate(path)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    assert "alias" in result.stderr.lower() and "limit" in result.stderr.lower(), result.describe()
    assert elapsed < 5, f"validate took {elapsed:.1f}s"  # the process start-up included


def test_alias_bomb_is_refused_by_the_loader_in_well_under_a_second():
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_text(_alias_bomb(12))
    assert time.monotonic() - started < 0.5
    assert "alias" in str(caught.value) and "limit" in str(caught.value)


def test_a_mapping_with_many_keys_is_nested_in_linear_time():
    # `a::b` keys are nested as a source is read and in each map a reference yields: merging each key into
    # the whole map copied it per key: 24 s here for the 100 000 keys a config under the node limit may have.
    started = time.monotonic()
    nested = unflatten({f"key{index}": index for index in range(100_000)} | {"a::b": 1})
    assert len(nested) == 100_001 and nested["a"] == {"b": 1}
    assert time.monotonic() - started < 1


def test_few_aliases_of_a_shared_block_are_fine():
    config = load_text("exporters:\n  otlphttp/a: &a {endpoint: 'http://h:1'}\n  otlphttp/b: *a\n"
                       "receivers:\n  otlp: {protocols: {http: {}}}\n"
                       "service:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [otlphttp/a, otlphttp/b]}\n")
    assert set(config.exporters) == {"otlphttp/a", "otlphttp/b"}


def test_deep_nesting_is_refused_naming_the_depth_limit():
    with pytest.raises(ConfigError) as caught:
        load_text("receivers: " + "[" * 5000 + "]" * 5000)
    assert "nest" in str(caught.value) and "limit" in str(caught.value)


def test_oversized_document_is_refused_naming_the_size_limit(tmp_path, validate):
    path = _write(tmp_path, "# padding\n" * 1_000_000)
    result = validate(path)
    assert result.returncode == 1, result.describe()
    assert "Traceback" not in result.stderr
    assert "MiB" in result.stderr and "limit" in result.stderr.lower(), result.describe()


def test_duplicate_key_is_an_error_at_its_path(tmp_path, validate, assert_errors):
    text = PIPELINE.format(receiver="127.0.0.1:4318", exporter="http://127.0.0.1:4318")
    text = text.replace("    endpoint: http://127.0.0.1:4318",
                        "    timeout: 5s\n    endpoint: http://127.0.0.1:4318\n    timeout: 10s")
    result = validate(_write(tmp_path, text))
    assert_errors(result, [("exporters::otlphttp::timeout", ["duplicate", "timeout"])])


def test_duplicate_top_level_key_is_an_error(tmp_path, validate, assert_errors):
    text = PIPELINE.format(receiver="127.0.0.1:4318", exporter="http://127.0.0.1:4318") + "exporters: {}\n"
    assert_errors(validate(_write(tmp_path, text)), [("exporters", ["duplicate"])])


def test_merge_key_may_be_overridden_without_a_duplicate_error():
    config = load_text("exporters:\n  otlphttp/a: &a {endpoint: 'http://h:1', timeout: 5s}\n"
                       "  otlphttp/b:\n    <<: *a\n    timeout: 9s\n"
                       "receivers:\n  otlp: {protocols: {http: {}}}\n"
                       "service:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [otlphttp/a, otlphttp/b]}\n")
    assert config.exporters["otlphttp/b"].config.timeout == 9


@pytest.mark.parametrize("receiver, exporter, path", [
    ("127.0.0.1:70000", "http://127.0.0.1:4318", "receivers::otlp::protocols::http::endpoint"),
    ("127.0.0.1:0", "http://127.0.0.1:4318", "receivers::otlp::protocols::http::endpoint"),
    ("127.0.0.1:4318", "http://127.0.0.1:99999", "exporters::otlphttp::endpoint"),
    ("127.0.0.1:4318", "http://127.0.0.1:0/v1", "exporters::otlphttp::endpoint"),
])
def test_port_out_of_range_is_an_error_at_its_path(receiver, exporter, path):
    with pytest.raises(ConfigError) as caught:
        load_text(PIPELINE.format(receiver=receiver, exporter=exporter))
    assert [p for p, _ in caught.value.errors] == [path]
    assert "1-65535" in caught.value.errors[0][1] or "1–65535" in caught.value.errors[0][1]


@pytest.mark.parametrize("exporter", ["http://127.0.0.1:abc/v1", "http://u:pw@127.0.0.1:x1?token=t", "http://[::1]:ff"])
def test_a_port_that_is_no_number_is_an_error_at_its_path(exporter):
    """otelcol refuses it at validation (Go's url.Parse: invalid port); accepted, every send failed unexpectedly."""
    with pytest.raises(ConfigError) as caught:
        load_text(PIPELINE.format(receiver="127.0.0.1:4318", exporter=exporter))
    assert [p for p, _ in caught.value.errors] == ["exporters::otlphttp::endpoint"]
    assert "not a number" in caught.value.errors[0][1] and "pw" not in caught.value.errors[0][1]


@pytest.mark.parametrize("proxy", ["http://u:pw@proxy:99999", "http://proxy:abc"])
def test_a_proxy_url_port_is_checked_as_an_endpoint_port(proxy):
    text = PIPELINE.format(receiver="127.0.0.1:4318", exporter=f"http://127.0.0.1:4318\n    proxy_url: {proxy}")
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    assert [p for p, _ in caught.value.errors] == ["exporters::otlphttp::proxy_url"]
    assert "pw" not in caught.value.errors[0][1]


def test_grpc_exporter_and_health_and_telemetry_ports_are_checked():
    text = PIPELINE.format(receiver="127.0.0.1:4318", exporter="http://127.0.0.1:4318")
    text = text.replace("exporters:\n", "exporters:\n  otlp:\n    endpoint: collector:65536\n")
    text = text.replace(
        "      exporters: [otlphttp]",
        "      exporters: [otlphttp, otlp]\n  extensions: [health_check]\n"
        "  telemetry:\n    metrics:\n      readers:\n        - pull:\n            exporter:\n"
        "              prometheus: {host: 127.0.0.1, port: 88888}",
    )
    text += "extensions:\n  health_check:\n    endpoint: 127.0.0.1:123456\n"
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    paths = sorted(p for p, _ in caught.value.errors)
    assert paths == ["exporters::otlp::endpoint", "extensions::health_check::endpoint",
                     "service::telemetry::metrics::readers::0::pull::exporter::prometheus::port"]


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                     st.text(max_size=12), st.sampled_from(["otlp", "otlphttp", "batch", "traces", "${env:X}", "$$",
                                                            "127.0.0.1:99999", "http://h:0", "10s", "-1s"]))
_KEYS = st.one_of(st.sampled_from(["receivers", "exporters", "processors", "extensions", "connectors", "service",
                                   "pipelines", "otlp", "otlphttp", "protocols", "grpc", "http", "endpoint",
                                   "traces", "telemetry", "metrics", "readers", "batch", "memory_limiter", "resource",
                                   "attributes", "actions", "sending_queue", "storage", "file_storage",
                                   "health_check", "failover", "priority_levels", "debug", "level"]),
                  st.text(max_size=6), st.integers(-3, 3))
_DOCUMENTS = st.recursive(_SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=5)), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(_KEYS, _DOCUMENTS, max_size=6))
def test_any_document_gives_a_config_or_a_config_error(document):
    import yaml

    try:
        text = yaml.safe_dump(document)
    except yaml.YAMLError:
        return
    try:
        load_text(text, environ={})
    except ConfigError:
        pass


@pytest.mark.parametrize("text", ["a: [", "\t- x", "key: value\n- item", "!!python/object:os.system {}",
                                  "? [a, b]\n: c", "a: !!binary '%%'", "\x00", "- 1\n- 2", "'just a string'",
                                  "receivers: &r\n  otlp: *r",
                                  "extensions: 5\nexporters: 7\nservice: {extensions: [a], pipelines: {traces: "
                                  "{receivers: [otlp], exporters: [x]}}}"])
def test_malformed_yaml_is_a_config_error(text):
    with pytest.raises(ConfigError):
        load_text(text, environ={})


def _paths_of(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths_of(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths_of(value, path + (index,))


def _replaced(node, path, value):
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replaced(node[path[0]], path[1:], value)
    return copy


def _seed_documents():
    import pathlib

    import yaml

    seeds = pathlib.Path(__file__).resolve().parents[1] / "testdata" / "seeds"
    return [yaml.safe_load(path.read_text()) for path in sorted(seeds.glob("tfo-*.yaml"))]


_SEEDS = _seed_documents()


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_mutation_of_a_real_config_gives_a_config_or_a_config_error(data):
    import yaml

    document = data.draw(st.sampled_from(_SEEDS))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths_of(document))
        path = data.draw(st.sampled_from(paths))
        document = _replaced(document, path, data.draw(st.one_of(_SCALARS, _DOCUMENTS)))
    try:
        load_text(yaml.safe_dump(document), environ={"TELEMETRYFLOW_ENDPOINT": "http://127.0.0.1:4318"})
    except ConfigError:
        pass
