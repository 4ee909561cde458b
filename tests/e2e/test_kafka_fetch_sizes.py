"""Messages larger than the fetch sizes a hub asks for still arrive: the broker returns a partition's
first record batch whole whatever its size (KIP-74), as otelcol's client reads it."""

from __future__ import annotations

import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.kafka import hub_config, trace_requests
from tests.helpers.net import wait_until

pytestmark = pytest.mark.e2e


def test_messages_larger_than_max_partition_fetch_size_and_max_fetch_size_arrive(agents, upstream, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 1)
    requests, sent = trace_requests(6, spans=2000)  # about 60 KB each
    assert min(len(request) for request in requests) > 16 * 1024
    kafka.produce("otlp_spans", requests)
    ports = AgentProcess(args=[])
    config = hub_config(tmp_path / "hub.yaml", kafka.bootstrap, upstream.url, ports, signals=("traces",),
                        max_partition_fetch_size=4096, max_fetch_size=8192)
    agents(["run", "--config", config, "--state-dir", str(tmp_path / "hub")], ports=ports, port_overrides=False)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="every large message upstream")
