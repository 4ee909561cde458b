"""The seed's Edge Buffering config, verbatim but for its batch timer, against a real upstream with real SDK
clients."""

from __future__ import annotations

import os
import time

from tests.helpers.net import wait_until
from tests.helpers.sdk import send_logs, send_metrics, send_spans

SEED = os.path.join(os.path.dirname(__file__), "..", "testdata", "seeds", "tfo-edge-buffering.yaml")
ENV = {
    "TELEMETRYFLOW_WORKSPACE_ID": "550e8400-e29b-41d4-a716-446655440000",
    "TELEMETRYFLOW_TENANT_ID": "660e8400-e29b-41d4-a716-446655440001",
    "EDGE_LOCATION": "plant-7",
}
EXPECTED_ATTRIBUTES = {
    "telemetryflow.workspace.id": ENV["TELEMETRYFLOW_WORKSPACE_ID"],
    "telemetryflow.tenant.id": ENV["TELEMETRYFLOW_TENANT_ID"],
    "edge.location": "plant-7",
}


def _attributes(record) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in record.attributes}


def _has_upserts(record) -> bool:
    attributes = _attributes(record)
    return all(attributes.get(key) == value for key, value in EXPECTED_ATTRIBUTES.items())


def test_seed_edge_config_delivers_every_signal_with_headers_and_attributes(agents, upstream, tmp_path):
    # The seed batches for up to 30 s (timeout: 30s, send_batch_size: 4096): what this test checks does not
    # depend on how long, and waiting it out cost half a minute.
    agent = agents(["run", "--config", SEED, "--set", f"extensions::file_storage::directory={tmp_path / 'queue'}",
                    "--set", "processors::batch::timeout=500ms"],
                   env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url})

    span_ids = send_spans("http", agent.http_port, 300) | send_spans("grpc", agent.grpc_port, 300)
    for transport, port in (("http", agent.http_port), ("grpc", agent.grpc_port)):
        send_metrics(transport, port, points=3)
        send_logs(transport, port, count=5)

    wait_until(lambda: upstream.span_ids() >= span_ids and len(upstream.log_records()) >= 10
               and len(upstream.data_points()) >= 6, timeout=30, interval=0.5, message="all signals upstream")

    assert upstream.span_ids() == span_ids
    assert all(_has_upserts(span) for span in upstream.spans())
    assert all(_has_upserts(record) for record in upstream.log_records())
    assert all(_has_upserts(point) for point in upstream.data_points())
    for received in upstream.requests:
        headers = {k.lower(): v for k, v in received.headers.items()}
        assert headers["content-encoding"] == "gzip"
        assert headers["x-workspace-id"] == ENV["TELEMETRYFLOW_WORKSPACE_ID"]
        assert headers["x-tenant-id"] == ENV["TELEMETRYFLOW_TENANT_ID"]
    assert agent.metric("otelcol_receiver_accepted_spans") == 600
    assert agent.metric("otelcol_exporter_sent_spans", exporter="otlphttp/telemetryflow") == 600
    assert agent.terminate() == 0


def test_seed_edge_config_keeps_data_through_an_outage_and_a_restart(agents, upstream, tmp_path):
    """"Data survives network outages": what the agent acknowledged while the platform was unreachable is
    on disk, survives a restart of the agent, and is delivered once the platform answers again."""
    upstream.refuse(reset=True)
    args = ["run", "--config", SEED, "--set", f"extensions::file_storage::directory={tmp_path / 'queue'}",
            "--set", "processors::batch::timeout=500ms"]
    env = {**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url}
    agent = agents(args, env=env)

    span_ids = send_spans("http", agent.http_port, 200, must_deliver=True)
    send_logs("grpc", agent.grpc_port, count=5)
    wait_until(lambda: upstream.attempts >= 1, timeout=30, interval=0.2, message="a first attempt at the platform")
    wait_until(lambda: agent.metric("otelcol_exporter_queue_size", data_type="traces") > 0, timeout=10,
               interval=0.2, message="the spans queued")
    # "Agents show as online but no data in backend": the agent stays healthy; its queue grows
    assert agent.health("/health")[0] == 200
    assert agent.metric("otelcol_exporter_queue_capacity", data_type="traces") == 20000
    assert agent.terminate() == 0

    upstream.listen()
    agent = agents(args, env=env, ports=agent)
    wait_until(lambda: upstream.span_ids() >= span_ids and len(upstream.log_records()) >= 5, timeout=60,
               interval=0.3, message="the backlog delivered after the restart")
    assert upstream.span_ids() == span_ids
    assert all(_has_upserts(span) for span in upstream.spans())
    assert agent.terminate() == 0


def test_seed_edge_config_drained_at_stop_sends_at_once_not_after_its_batch_timer(agents, upstream, tmp_path):
    """A stop with EDGEAGENT_DRAIN_TIMEOUT keeps sending the queue: what is queued must go out now, not
    after the seed's 30 s batch timer (which would outlast most drain timeouts, leaving it all on disk)."""
    agent = agents(["run", "--config", SEED, "--set", f"extensions::file_storage::directory={tmp_path / 'queue'}"],
                   env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url, "EDGEAGENT_DRAIN_TIMEOUT": "20"})
    span_ids = send_spans("http", agent.http_port, 50, must_deliver=True)
    send_logs("grpc", agent.grpc_port, count=3)

    stopping = time.monotonic()
    assert agent.terminate(timeout=40) == 0
    assert time.monotonic() - stopping < 10
    assert upstream.span_ids() == span_ids
    assert len(upstream.log_records()) == 3


def test_seed_edge_config_retries_past_max_elapsed_time_without_dropping(agents, upstream, tmp_path):
    """"Guaranteed Delivery: Retry until successful", with `max_elapsed_time: 3600s` (otelcol drops a batch
    then): here scaled down to 2 s against an upstream failing for longer; nothing may be dropped."""
    exporter = "exporters::otlphttp/telemetryflow::retry_on_failure"
    upstream.status = 503
    agent = agents(["run", "--config", SEED, "--set", f"extensions::file_storage::directory={tmp_path / 'queue'}",
                    "--set", "processors::batch::timeout=200ms", "--set", f"{exporter}::max_elapsed_time=2s",
                    "--set", f"{exporter}::initial_interval=200ms", "--set", f"{exporter}::max_interval=500ms"],
                   env={**ENV, "TELEMETRYFLOW_ENDPOINT": upstream.url})
    span_ids = send_spans("http", agent.http_port, 100, must_deliver=True)
    outage = time.monotonic()
    wait_until(lambda: time.monotonic() - outage > 4 and upstream.attempts >= 5, timeout=30, interval=0.2,
               message="retries past max_elapsed_time")

    upstream.status = 200
    wait_until(lambda: upstream.span_ids() >= span_ids, timeout=30, interval=0.3, message="delivery after the outage")
    assert upstream.span_ids() == span_ids
    assert agent.metric("otelcol_exporter_send_failed_spans", exporter="otlphttp/telemetryflow") >= 100
    assert agent.metric("edgeagent_deadletter_items") == 0
    assert agent.terminate() == 0
