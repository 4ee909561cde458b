"""Interoperability: edgeagent's exporters against another collector, and against itself as a hub.

rotel (a collector written in Rust) receives from edgeagent over OTLP/HTTP (`otlphttp`) and
OTLP/gRPC (`otlp`) and forwards what it got to the test upstream, where every span must
arrive with its resource intact. A second edgeagent, run as a hub with its embedded default
config, does the same for an edge agent's `otlp` and `otlphttp` exporters.
"""

from __future__ import annotations

import pytest

from tests.helpers.configs import grpc_exporter, http_exporter, traces_config
from tests.helpers.net import wait_until
from tests.helpers.rotel import Rotel, rotel_binary
from tests.helpers.sdk import send_spans

SPANS = 5000  # per client transport
BATCH = {"batch": {"timeout": "200ms", "send_batch_size": 2048, "send_batch_max_size": 4096}}

needs_rotel = pytest.mark.skipif(rotel_binary() is None,
                                 reason="rotel-agent not found: install the `rotel` package (in the test extra)")


def _exporter(kind: str, grpc_port: int, http_port: int) -> dict:
    if kind == "otlp":
        return {"otlp": grpc_exporter(f"127.0.0.1:{grpc_port}", sending_queue={"num_consumers": 4})}
    return {"otlphttp": http_exporter(f"http://127.0.0.1:{http_port}", sending_queue={"num_consumers": 4})}


def _services(upstream) -> set[str]:
    return {kv.value.string_value for received in upstream.received("traces")
            for rs in received.message.resource_spans for kv in rs.resource.attributes if kv.key == "service.name"}


def _send_through(agents, tmp_path, upstream, exporters: dict) -> None:
    """Start an edge agent with `exporters`, send over both transports, expect every span upstream."""
    config = traces_config(tmp_path / "edge.yaml", exporters, processors=BATCH)
    edge = agents(["run", "--config", config, "--state-dir", str(tmp_path / "edge")])
    sent = send_spans("grpc", edge.grpc_port, SPANS, service="via-grpc") | \
        send_spans("http", edge.http_port, SPANS, service="via-http")
    assert len(sent) == 2 * SPANS

    wait_until(lambda: upstream.span_ids() >= sent, timeout=60, interval=0.25, message="every span upstream")
    assert upstream.span_ids() == sent
    assert _services(upstream) == {"via-grpc", "via-http"}
    wait_until(lambda: edge.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=15,
               message="the edge agent's queue empty")
    assert edge.metric("otelcol_exporter_sent_spans") == 2 * SPANS
    assert edge.terminate() == 0


@needs_rotel
@pytest.mark.parametrize("exporter", ["otlphttp", "otlp"])
def test_every_span_reaches_rotel(agents, upstream, tmp_path, exporter):
    rotel = Rotel.forwarding_to(tmp_path / "rotel", upstream.url).start()
    try:
        _send_through(agents, tmp_path, upstream, _exporter(exporter, rotel.grpc_port, rotel.http_port))
    finally:
        rotel.stop()


@pytest.mark.parametrize("exporter", ["otlp", "otlphttp"])
def test_every_span_crosses_an_edgeagent_hub(agents, upstream, tmp_path, exporter):
    hub = agents(["run", "--state-dir", str(tmp_path / "hub"), "--upstream", upstream.url])
    _send_through(agents, tmp_path, upstream, _exporter(exporter, hub.grpc_port, hub.http_port))
    wait_until(lambda: hub.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=15,
               message="the hub's queue empty")
    assert hub.metric("otelcol_receiver_accepted_spans") == 2 * SPANS
    assert hub.terminate() == 0
