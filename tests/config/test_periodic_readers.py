"""otelcol 0.165's periodic metric reader keys (otelconf v0.3.0): what each means, read as otelcol reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeagent.config.periodic import OtlpPush, Periodic
from edgeagent.config.redact import REDACTED, redact
from edgeagent.config.service import MetricsConfig

GOOD = Path(__file__).resolve().parents[1] / "testdata" / "config" / "good-telemetry-periodic-readers.yaml"


def _otlp(**keys) -> OtlpPush:
    return OtlpPush.model_validate({"protocol": "http/protobuf", **keys})


@pytest.mark.parametrize("endpoint, insecure, url", [
    ("https://upstream:4318", False, "https://upstream:4318/v1/metrics"),  # no path: the signal's
    ("https://upstream:4318/v1/metrics", False, "https://upstream:4318/v1/metrics"),
    ("http://upstream:4318/custom/path", False, "http://upstream:4318/custom/path"),  # a path is used as it is
    ("upstream:4318", False, "https://upstream:4318/v1/metrics"),  # no scheme: https, as otelcol normalises it
    ("upstream:4318", True, "http://upstream:4318/v1/metrics"),  # ... unless insecure
    ("https://upstream:4318", True, "https://upstream:4318/v1/metrics"),  # the scheme wins over insecure
    (None, False, "https://localhost:4318/v1/metrics"),  # the OTLP exporter's default
])
def test_an_http_endpoint_is_posted_to_as_otelconf_posts(endpoint, insecure, url):
    assert _otlp(endpoint=endpoint, insecure=insecure).metrics_url() == url


def test_insecure_beside_an_https_endpoint_is_a_warning_as_it_changes_nothing():
    config = MetricsConfig.model_validate({"readers": [{"periodic": {"exporter": {"otlp": {
        "protocol": "grpc", "endpoint": "https://upstream:4317", "insecure": True}}}}]})
    assert config.config_warnings() == ["readers::0::periodic::exporter::otlp::insecure has no effect: the endpoint's "
                                        "https:// scheme asks for TLS (as in otelcol); remove insecure, or write "
                                        "http:// for plaintext"]


def test_headers_win_over_headers_list_whose_values_are_percent_decoded_and_a_null_value_is_not_sent():
    otlp = _otlp(headers_list="x-tenant=edge, x-token=a%20b;prop=1,x-api-key=list",
                 headers=[{"name": "x-api-key", "value": "pair"}, {"name": "x-unset", "value": None}])
    assert otlp.header_map() == {"x-tenant": "edge", "x-token": "a b", "x-api-key": "pair"}


@pytest.mark.parametrize("keys, word", [
    ({"headers_list": "novalue"}, "name=value"),
    ({"headers": [{"name": "", "value": "v"}]}, "empty name"),
    ({"headers": [{"name": "x", "value": "a\nb"}]}, "control character"),
    ({"client_certificate": "c.pem"}, "client_key"),
    ({"endpoint": "https://upstream:port"}, "port"),
    ({"compression": "zstd"}, "gzip"),
    ({"temporality_preference": "sometimes"}, "lowmemory"),
])
def test_a_mistake_in_the_otlp_exporter_is_refused(keys, word):
    with pytest.raises(ValueError, match=word):
        _otlp(**keys)


def test_interval_and_timeout_are_milliseconds_and_zero_means_the_default():
    periodic = Periodic.model_validate({"exporter": {"console": None}, "interval": 250, "timeout": 0})
    assert (periodic.interval_seconds(), periodic.timeout_seconds()) == (0.25, 30.0)
    assert Periodic.model_validate({"exporter": {"console": {}}}).interval_seconds() == 60.0


def test_a_reader_is_either_pull_or_periodic_and_level_none_pushes_nothing():
    push = {"periodic": {"exporter": {"console": {}}}}
    pull = {"pull": {"exporter": {"prometheus": {"port": 8888}}}}
    with pytest.raises(ValueError, match="exactly one"):
        MetricsConfig.model_validate({"readers": [{**push, **pull}]})
    with pytest.raises(ValueError, match="exactly one"):
        MetricsConfig.model_validate({"readers": [{"periodic": {"exporter": {}}}]})
    both = MetricsConfig.model_validate({"readers": [pull, push]})
    assert both.endpoints() == ["127.0.0.1:8888"] and [at for at, _ in both.pushes()] == [1]
    assert MetricsConfig.model_validate({"level": "none", "readers": [push]}).pushes() == []


def test_print_config_masks_header_values_and_headers_list_but_not_header_names():
    document = yaml.safe_load(GOOD.read_text(encoding="utf-8"))
    readers = redact(document)["service"]["telemetry"]["metrics"]["readers"]
    assert readers[1]["periodic"]["exporter"]["otlp"]["headers"] == [{"name": "x-api-key", "value": REDACTED}]
    assert readers[2]["periodic"]["exporter"]["otlp"]["headers_list"] == REDACTED
