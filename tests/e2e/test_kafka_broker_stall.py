"""A hub whose broker stalls while it consumes: its session lapses, its commits fail, and once the
broker answers again it rejoins the group and reads on from its committed offsets. Nothing is lost,
and consuming does not stop for good.
"""

from __future__ import annotations

import collections
import time

import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.kafka import hub_config, trace_requests
from tests.helpers.net import wait_until

pytestmark = pytest.mark.e2e


def _lag(agent: AgentProcess) -> dict[str, float]:
    return {key.split('partition="')[1].split('"')[0]: value for key, value in agent.metrics().items()
            if key.startswith("kafka_consumer_lag{")}


@pytest.mark.parametrize("stall", [2.0, 8.0])  # within the 3 s session timeout, and well past it
def test_a_hub_reads_on_after_its_broker_stalls(agents, upstream, kafka, tmp_path, stall):
    kafka.create_topic("otlp_spans", 2)
    ports = AgentProcess(args=[])
    config = hub_config(tmp_path / "hub.yaml", kafka.bootstrap, upstream.url, ports, signals=("traces",))
    hub = agents(["run", "--config", config, "--state-dir", str(tmp_path / "hub")], ports=ports,
                 port_overrides=False)
    before, sent = trace_requests(40)
    kafka.produce("otlp_spans", before)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="the first spans upstream")

    kafka.pause()
    try:
        time.sleep(stall)
    finally:
        kafka.resume()
    after, more = trace_requests(40)
    kafka.produce("otlp_spans", after)
    sent |= more
    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25,
               message=f"the spans written after a {stall:g}s stall upstream\n{hub.log()[-3000:]}")
    wait_until(lambda: len(_lag(hub)) == 2 and not any(_lag(hub).values()), timeout=30,
               message="every offset committed after the stall")
    counts = collections.Counter(span.span_id for span in upstream.spans())
    assert set(counts) == sent
