"""Which otlphttp endpoints a config needs, as otelcol 0.165 decides: at least one of endpoint and
the signal endpoints in the exporter's config, and for each pipeline using it, endpoint or that
signal's endpoint (otelcol finds the missing one when it builds the pipeline). Side by side with
`otelcol-contrib validate` where it can be built."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from edgeagent.config.loader import ConfigError, load_text
from edgeagent.exporters.otlphttp import OtlpHttpConfig
from edgeagent.signals import Signal
from tests.config.conftest import REPO_ROOT, _environment


def _config(exporter: dict, signals: tuple[str, ...]) -> dict:
    pipelines = {signal: {"receivers": ["otlp"], "exporters": ["otlphttp"]} for signal in signals}
    return {"receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318"}}}},
            "exporters": {"otlphttp": exporter}, "service": {"pipelines": pipelines}}


TRACES_ONLY = {"traces_endpoint": "http://127.0.0.1:4319/v1/traces"}
CASES = [  # (exporter, pipelines, accepted)
    (TRACES_ONLY, ("traces",), True),
    (TRACES_ONLY, ("traces", "metrics"), False),
    ({"logs_endpoint": "http://127.0.0.1:4319/logs", "metrics_endpoint": "http://127.0.0.1:4319/m"},
     ("logs", "metrics"), True),
    ({"endpoint": "http://127.0.0.1:4319"}, ("traces", "metrics", "logs"), True),
    ({"compression": "gzip"}, ("traces",), False),
    ({"endpoint": "HTTP://127.0.0.1:4319"}, ("traces",), True),
]


def _ours(document: dict) -> list[tuple[str, str]]:
    try:
        load_text(yaml.safe_dump(document), environ={})
    except ConfigError as exc:
        return exc.errors
    return []


@pytest.mark.parametrize(("exporter", "signals", "accepted"), CASES)
def test_a_signal_endpoint_alone_serves_the_pipelines_of_its_signal(exporter, signals, accepted):
    errors = _ours(_config(exporter, signals))
    assert not errors if accepted else errors, errors


def test_a_pipeline_whose_signal_has_no_endpoint_is_named_with_the_fix():
    [(path, message)] = _ours(_config(TRACES_ONLY, ("traces", "metrics")))
    assert path == "exporters::otlphttp::metrics_endpoint"
    assert "endpoint or metrics_endpoint" in message and "'metrics'" in message


@pytest.mark.e2e
def test_otelcol_decides_alike(otelcol_binary, tmp_path):
    for index, (exporter, signals, accepted) in enumerate(CASES):
        path = tmp_path / f"config{index}.yaml"
        path.write_text(yaml.safe_dump(_config(exporter, signals)))
        theirs = subprocess.run([str(otelcol_binary), "validate", "--config", str(path)], capture_output=True,
                                text=True, timeout=60, check=False)
        ours = subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", str(path)],
                              capture_output=True, text=True, timeout=60, check=False, env=_environment(None),
                              cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
        assert (theirs.returncode == 0, ours.returncode == 0) == (accepted, accepted), (exporter, signals,
                                                                                           theirs.stderr[-500:],
                                                                                           ours.stdout[-500:])


def test_a_scheme_in_capitals_is_read_as_go_reads_it():
    """Go's url.Parse lowercases the scheme: otelcol sends to HTTPS://host as to https://host."""
    assert not _ours(_config({"endpoint": "HTTP://127.0.0.1:4319", "traces_endpoint": "Https://h:4319/t"},
                             ("traces", "metrics")))
    config = OtlpHttpConfig(endpoint="HTTP://127.0.0.1:4319", traces_endpoint="Https://h:4319/t")
    assert config.url(Signal.METRICS) == "http://127.0.0.1:4319/v1/metrics"
    assert config.url(Signal.TRACES) == "https://h:4319/t"
