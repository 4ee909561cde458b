"""An exporter with `timeout: 0` (otelcol's "no timeout") and an upstream that takes the request and
never answers: the attempt waits, the agent still stops on SIGTERM within its grace period, and the
data is still queued when it starts again."""

from __future__ import annotations

import socket
import time

from tests.helpers.net import wait_until
from tests.helpers.sdk import send_spans


def test_an_attempt_without_timeout_ends_at_shutdown_and_its_data_stays_queued(agents, tmp_path):
    silent = socket.socket()  # listens, never accepts: connections complete, requests go unanswered
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        state = tmp_path / "state"
        args = ["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{silent.getsockname()[1]}",
                "--set", "exporters::otlphttp::timeout=0"]
        agent = agents(args)
        send_spans("http", agent.http_port, 20)
        wait_until(lambda: agent.metric("edgeagent_queue_items") == 20, timeout=10, message="the spans queued")
        time.sleep(1.0)  # the attempt is under way: no answer comes, and no timeout ends it
        assert agent.metric("otelcol_exporter_send_failed_spans") == 0
        started = time.monotonic()
        assert agent.terminate() == 0
        assert time.monotonic() - started < 10.0
        again = agents(args, ports=agent)
        assert again.metric("edgeagent_queue_items") == 20
        assert again.terminate() == 0
    finally:
        silent.close()
