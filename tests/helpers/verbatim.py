"""Run one seed config byte for byte, as a user runs it, and print what happened as JSON.

`python -m tests.helpers.verbatim SEED` is meant to run inside private network and mount namespaces
(`unshare --net --mount`, see tests/e2e/test_seed_verbatim.py): there the seed's own ports (0.0.0.0:4317,
:4318, :13133 and the metrics' :8888) are free, `/var/lib` is a fresh tmpfs for its queue directory
(`/var/lib/otelcol/queue`), and the platform is an upstream on that namespace's loopback. Nothing is
overridden: no `--set`, no port moved. The agent is stopped with SIGTERM and EDGEAGENT_DRAIN_TIMEOUT,
so what it accepted is flushed and sent before it exits, whatever the seed's batch timer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.helpers.sdk import send_logs, send_metrics, send_spans
from tests.helpers.upstream import Upstream

PLATFORM_PORT = 14318
ENV = {
    "TELEMETRYFLOW_ENDPOINT": f"http://127.0.0.1:{PLATFORM_PORT}/api",
    "TELEMETRYFLOW_WORKSPACE_ID": "550e8400-e29b-41d4-a716-446655440000",
    "TELEMETRYFLOW_TENANT_ID": "660e8400-e29b-41d4-a716-446655440001",
    "TELEMETRYFLOW_API_KEY": "tfk-3f9a61c2.tfs-5be0d7a4e8",
    "EDGE_LOCATION": "plant-7",
    "EDGEAGENT_DRAIN_TIMEOUT": "15",
}


def _environment(seed: str) -> dict[str, str]:
    env = {**os.environ, **ENV}
    if os.path.basename(seed) == "tfo-hub-agent.yaml":
        # its collector (`http://tfo-otel-collector:4318`) does not resolve here: nothing to drain into
        env.pop("EDGEAGENT_DRAIN_TIMEOUT")
    return env


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _metrics() -> str:
    with urllib.request.urlopen("http://127.0.0.1:8888/metrics", timeout=5) as response:
        return response.read().decode()


def walk(seed: str, log_path: str) -> dict:
    platform = Upstream(PLATFORM_PORT, path_prefix="/api").start()
    with open(log_path, "ab") as log:
        agent = subprocess.Popen([sys.executable, "-m", "edgeagent", "--config", seed], env=_environment(seed),
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (_listening(4317) and _listening(4318) and _listening(8888)):
            if agent.poll() is not None or time.monotonic() > deadline:
                return {"started": False, "exit": agent.poll()}
            time.sleep(0.1)
        metrics_only = "hub" in os.path.basename(seed)  # the hub configs have a metrics pipeline only
        spans = set() if metrics_only else send_spans("http", 4318, 20) | send_spans("grpc", 4317, 20)
        send_metrics("grpc", 4317, points=3)
        send_metrics("http", 4318, points=2)
        if not metrics_only:
            send_logs("http", 4318, count=4)
        result = {
            "started": True,
            "health_13133": _status("http://127.0.0.1:13133/health"),
            "health_4318": _status("http://127.0.0.1:4318/health"),
            "exporter_series": sorted({line.partition("{")[0] for line in _metrics().splitlines()
                                       if line.startswith("otelcol_exporter_")}),
            "queue_directory": os.path.isdir("/var/lib/otelcol/queue"),
        }
        agent.send_signal(signal.SIGTERM)
        result["exit"] = agent.wait(60)
        received = platform.span_ids()
        result.update({
            "spans_sent": len(spans), "spans_received": len(received), "spans_match": received == spans,
            "points_received": len(platform.data_points()), "logs_received": len(platform.log_records()),
            "headers": sorted({key.lower() for r in platform.requests for key in r.headers}),
            "authorization": sorted({r.headers.get("Authorization", "") for r in platform.requests}),
        })
        return result
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        platform.stop()


if __name__ == "__main__":
    print(json.dumps(walk(sys.argv[1], sys.argv[2])))
