"""An otelcol 0.165 config runs as it is: debug exporter output, self-metrics readers and level none."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
import yaml

from tests.helpers.net import wait_until
from tests.helpers.sdk import send_spans

CONFIG = {
    "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
    "exporters": {"debug": {"verbosity": "normal", "sampling_initial": 100}},
    "extensions": {"health_check": {}},
    "service": {
        "extensions": ["health_check"],
        "telemetry": {"metrics": {"level": "detailed", "readers": [
            {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": 8888}}}}]}},
        "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}},
    },
}


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "otelcol.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return str(path)


@pytest.mark.parametrize("queued", ["false", "true"])
def test_debug_exporter_logs_every_span_at_normal_verbosity(agents, config_path, tmp_path, queued):
    agent = agents(["run", "--config", config_path, "--state-dir", str(tmp_path / "state"),
                    "--set", f"exporters::debug::sending_queue::enabled={queued}"])
    send_spans("http", agent.http_port, 5, batch=5)
    wait_until(lambda: all(f"op-{index} trace_id=" in agent.log() for index in range(5)), timeout=20,
               message="the debug exporter's lines in the log")
    assert agent.metric("otelcol_receiver_accepted_spans") == 5  # served by the prometheus reader
    assert agent.terminate() == 0


def test_telemetry_level_none_serves_no_metrics(agents, config_path, tmp_path):
    agent = agents(["run", "--config", config_path, "--state-dir", str(tmp_path / "state"),
                    "--set", "service::telemetry::metrics::level=none"])
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=2)
    assert agent.terminate() == 0
