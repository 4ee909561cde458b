"""A gateway without a real-time clock boots at 1970 (or days behind, at the time fake-hwclock saved),
the agent starts and buffers, then NTP steps the clock forward by years. max_age aged records by
the wall clock stamped at enqueue, so every record buffered before the step looked years old and
the next sweep dropped the whole backlog as `max_age`, though it was minutes old.

The real agent runs under libfaketime with only its wall clock faked (the monotonic clock is
the real one), and the faked clock is stepped forward while it runs, as NTP steps it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.configs import FAST_RETRY
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream

pytestmark = pytest.mark.e2e

SPANS = 300  # in 30 requests: 30 records, of which the one consumer leases one at a time
STEP_SECONDS = 50 * 365 * 86400  # fifty years forward: a clock at 1970 set right


def _libfaketime() -> str | None:
    """The path of libfaketime.so.1 (Debian package libfaketime), or None when it is not installed."""
    if shutil.which("dpkg") is None:
        return None
    listed = subprocess.run(["dpkg", "-L", "libfaketime"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        if line.endswith("/libfaketime.so.1") and os.path.exists(line):
            return line
    return None


LIBFAKETIME = _libfaketime()


def _config(path: Path, upstream_port: int, queue_dir: Path) -> str:
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "exporters": {"otlphttp": {"endpoint": f"http://127.0.0.1:{upstream_port}", "retry_on_failure": FAST_RETRY,
                                   "sending_queue": {"storage": "file_storage", "num_consumers": 1}}},
        "extensions": {"health_check": {}, "file_storage": {"directory": str(queue_dir), "max_age": "1h"}},
        "service": {"extensions": ["health_check", "file_storage"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def _uptime(agent) -> float:
    return float(agent.health()[1]["uptime"].rstrip("s"))


@pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime is not installed (Debian package libfaketime): "
                                                "the agent's wall clock cannot be stepped")
def test_a_backlog_buffered_before_ntp_steps_the_clock_forward_years_is_kept_and_delivered(agents, tmp_path):
    assert LIBFAKETIME is not None
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    env = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    port = free_port()
    config = _config(tmp_path / "config.yaml", port, tmp_path / "queue")
    agent = agents(["run", "--config", config], env=env)
    sent = send_spans("http", agent.http_port, SPANS, batch=10)
    wait_until(lambda: agent.health()[1]["exporters"]["otlphttp"]["upstream"] == "offline", timeout=10,
               message="the exporter offline")
    assert agent.metric("edgeagent_queue_items", data_type="traces") == SPANS

    clock.write_text(f"+{STEP_SECONDS}\n")  # NTP steps the clock
    wait_until(lambda: "the wall clock stepped forward" in agent.log(), timeout=10,
               message="the agent noticing the step")
    time.sleep(3.5)  # three max_age sweeps, one a second
    assert _uptime(agent) < 600  # measured on the clock nobody steps, as Go's time.Since measures it

    assert agent.metric("edgeagent_dropped_items_total", reason="max_age") == 0
    assert agent.metric("edgeagent_queue_items", data_type="traces") == SPANS
    ages = [queue["oldest_age_seconds"] for queue in agent.health()[1]["queues"].values()]
    assert ages and max(ages) < 120, ages

    upstream = Upstream(port).start()
    try:
        wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="backlog delivered")
        assert upstream.span_ids() == sent
    finally:
        upstream.stop()
    assert agent.terminate() == 0
