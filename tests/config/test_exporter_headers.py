"""Exporter header values that no HTTP/1.1 or HTTP/2 request can carry are refused at load, naming
the header and the fix, never the value (it may be a secret). A token file written with `echo` and read
with ${file:} keeps its newline: accepted, every send would fail until someone read the logs."""

from __future__ import annotations

import pytest
import yaml

from edgeagent.config.loader import ConfigError, load_text


def _config(exporter: str, endpoint: str, headers: dict[str, str]) -> str:
    return yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"http": {}}}},
        "exporters": {exporter: {"endpoint": endpoint, "headers": headers}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": [exporter]}}},
    })


@pytest.mark.parametrize("exporter,endpoint", [("otlp_http", "http://collector:4318"),
                                               ("otlp_grpc", "collector:4317")])
@pytest.mark.parametrize("name,value", [("Authorization", "Bearer s3cret\n"), ("X-Token", "s3cret\r\nX-Evil: 1"),
                                        ("X-Null", "s3\x00cret")])
def test_a_header_no_request_can_carry_is_refused_naming_it_not_its_value(exporter, endpoint, name, value):
    with pytest.raises(ConfigError) as refused:
        load_text(_config(exporter, endpoint, {name: value}))
    message = str(refused.value)
    assert f"exporters::{exporter}::headers" in message
    assert "s3" not in message and "cret" not in message
    assert "printf %s" in message  # the fix


@pytest.mark.parametrize("exporter,endpoint", [("otlp_http", "http://collector:4318"),
                                               ("otlp_grpc", "collector:4317")])
def test_ordinary_headers_with_tabs_and_spaces_inside_are_kept(exporter, endpoint):
    config = load_text(_config(exporter, endpoint, {"Authorization": "Bearer a b\tc", "x-tenant": "acme"}))
    assert config.exporters[exporter].config.headers == {"Authorization": "Bearer a b\tc", "x-tenant": "acme"}
