"""After a run, the otelcol counters hold the exact numbers sent."""

from __future__ import annotations

from tests.helpers.net import wait_until
from tests.helpers.sdk import send_logs, send_metrics, send_spans


def test_counters_match_what_was_sent_and_delivered(agents, upstream, tmp_path):
    agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", upstream.url])
    spans = send_spans("http", agent.http_port, 1234) | send_spans("grpc", agent.grpc_port, 766)
    send_metrics("http", agent.http_port, points=4)
    send_metrics("grpc", agent.grpc_port, points=3)
    send_logs("http", agent.http_port, count=11)
    send_logs("grpc", agent.grpc_port, count=9)

    wait_until(lambda: len(upstream.span_ids()) == 2000 and len(upstream.data_points()) == 7
               and len(upstream.log_records()) == 20, timeout=30, message="everything upstream")
    assert upstream.span_ids() == spans
    assert agent.metric("otelcol_receiver_accepted_spans", transport="http") == 1234
    assert agent.metric("otelcol_receiver_accepted_spans", transport="grpc") == 766
    assert agent.metric("otelcol_receiver_accepted_metric_points") == 7
    assert agent.metric("otelcol_receiver_accepted_log_records") == 20
    wait_until(lambda: agent.metric("otelcol_exporter_sent_log_records") == 20, timeout=10)
    assert agent.metric("otelcol_exporter_sent_spans", exporter="otlphttp") == 2000
    assert agent.metric("otelcol_exporter_sent_metric_points", exporter="otlphttp") == 7
    assert agent.metric("otelcol_receiver_refused_spans") == 0
    assert agent.metric("otelcol_exporter_send_failed_spans") == 0
    wait_until(lambda: agent.metric("otelcol_exporter_queue_size", exporter="otlphttp") == 0, timeout=10)  # acks linger
    assert agent.metric("otelcol_exporter_queue_capacity", exporter="otlphttp", data_type="traces") == 1_000_000
    assert agent.metric("edgeagent_upstream_configured", exporter="otlphttp") == 1
    assert agent.terminate() == 0


def test_a_permanent_rejection_is_dead_lettered_and_counted_not_dropped(agents, upstream, tmp_path):
    upstream.status = 400
    agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", upstream.url])
    send_spans("http", agent.http_port, 300)
    wait_until(lambda: agent.metric("edgeagent_deadletter_items") == 300, timeout=30, message="dead letters")
    assert agent.metric("otelcol_exporter_send_failed_spans", exporter="otlphttp") == 300
    assert agent.metric("otelcol_exporter_sent_spans") == 0
    assert agent.metric("edgeagent_deadletter_entries") >= 1
    wait_until(lambda: agent.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=10)
    # a 400 is never retried: every span went upstream once (the SDK's export may be one request or two,
    # which the sender may merge into one attempt: each request stays its own dead-letter entry)
    assert sum(call.items for call in upstream.calls) == 300
    assert upstream.attempts <= agent.metric("edgeagent_deadletter_entries")
    assert agent.terminate() == 0


def test_without_an_upstream_everything_is_buffered_and_health_says_so(agents, tmp_path):
    agent = agents(["run", "--state-dir", str(tmp_path / "state")])
    send_spans("http", agent.http_port, 100)
    status, health = agent.health()
    assert status == 200
    assert health["exporters"]["otlphttp"]["upstream"] == "not configured"
    assert health["queues"]["otlphttp/traces"]["items"] == 100
    assert agent.metric("edgeagent_upstream_configured", exporter="otlphttp") == 0
    budget = agent.metric("edgeagent_queue_storage_limit_bytes", directory=str(tmp_path / "state" / "queue"))
    assert 0 < budget <= 8192 << 20  # no config still means a disk budget, never the whole disk
    assert agent.terminate() == 0
    assert "no upstream is configured" in agent.log()


def test_an_upstream_given_as_a_signal_url_is_delivered_to_not_dead_lettered(agents, upstream, tmp_path):
    agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", f"{upstream.url}/v1/traces"])
    send_spans("http", agent.http_port, 20)
    wait_until(lambda: len(upstream.spans()) == 20, timeout=20, message="spans delivered to the base URL")
    assert agent.health()[1]["dead_letters"] == 0
    assert "names the traces path" in agent.log()
