"""An upstream that comes back is used at once, not after the exporter's backoff has run out.

While the attempts fail without an answer (connection refused), the exporter watches whether the
upstream's host:port accepts a TCP connection and tries again as soon as it does. An upstream that
answers (503, a proxy's 502) keeps the backoff: it is never tried faster than that.
"""

from __future__ import annotations

import time

from tests.helpers.configs import grpc_exporter, http_exporter, traces_config
from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.kafka import edge_config, wait_for_spans
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream

# long enough that waiting out the backoff is seen: the first retry comes 20 s after a failure
SLOW_RETRY = {"initial_interval": "20s", "max_interval": "60s", "randomization_factor": 0}
# a request a second at most: a client retrying without its backoff makes many more in a few seconds
FIXED_RETRY = {"initial_interval": "1s", "max_interval": "1s", "randomization_factor": 0}


def _wait_offline(agent) -> None:
    """Until the exporter's link is offline (three refused attempts): no consumer sends before the watch
    sees the upstream listen or the probe's backoff has passed."""
    wait_until(lambda: agent.metrics().get('edgeagent_upstream_online{exporter="otlphttp"}') == 0.0, timeout=30,
               interval=0.1, message="the link offline")


def _wait_failed(agent, exporter: str) -> None:
    """Until the exporter's first attempt has failed (its health names the problem) and its watch has
    looked at the port while nothing listens: the next attempt waits for the watch or the backoff."""
    wait_until(lambda: agent.health()[1].get("exporters", {}).get(exporter, {}).get("problem"), timeout=30,
               interval=0.1, message=f"a failed attempt of {exporter}")
    time.sleep(1.5)  # a look or two of the watch (one a second, jittered)


def _first_delivery(upstream: Upstream | GrpcUpstream, listening: float) -> float:
    wait_until(lambda: upstream.spans(), timeout=60, message="the backlog starts draining")
    delivered = [attempt.at for attempt in upstream.calls if getattr(attempt, "status", 200) == 200]
    return min(delivered) - listening


def test_backlog_drains_within_seconds_of_a_refusing_upstream_listening(agents, tmp_path):
    port = free_port()  # nothing listens: connections are refused
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(
        f"http://127.0.0.1:{port}", retry_on_failure=SLOW_RETRY, sending_queue={"num_consumers": 4})})
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
    for _ in range(4):
        send_spans("http", agent.http_port, 50)
    _wait_offline(agent)  # every consumer waits: for its 20 s backoff, or for the link's single probe
    upstream = Upstream(port).start()
    listening = time.monotonic()
    try:
        assert _first_delivery(upstream, listening) < 2.5
        wait_until(lambda: len(upstream.spans()) == 200, timeout=30, message="the whole backlog delivered")
    finally:
        upstream.stop()


def test_grpc_backlog_drains_within_seconds_of_a_refusing_upstream_listening(agents, tmp_path):
    port = free_port()
    config = traces_config(tmp_path / "agent.yaml", {"otlp": grpc_exporter(
        f"127.0.0.1:{port}", retry_on_failure=SLOW_RETRY)})
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
    send_spans("http", agent.http_port, 50)
    _wait_failed(agent, "otlp")  # refused: in its 20 s backoff
    upstream = GrpcUpstream(port).start()
    listening = time.monotonic()
    try:
        assert _first_delivery(upstream, listening) < 2.5
    finally:
        upstream.stop()


def _requests_within(upstream: Upstream, seconds: float) -> int:
    """Requests the upstream received in `seconds` from its first one."""
    wait_until(lambda: upstream.calls, timeout=30, message="a first request")
    first = upstream.calls[0].at
    time.sleep(max(0.0, first + seconds - time.monotonic()))
    return sum(1 for attempt in upstream.calls if attempt.at - first < seconds)


def test_an_upstream_that_listens_but_answers_503_is_tried_at_the_backoff_rate(agents, tmp_path):
    port = free_port()
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(
        f"http://127.0.0.1:{port}", retry_on_failure=FIXED_RETRY)})
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
    send_spans("http", agent.http_port, 50)
    _wait_offline(agent)  # refused first: the exporter watches for the port to open
    upstream = Upstream(port, status=503).start()
    try:
        # one lease, one consumer: a request a second, the first when the port opens
        assert _requests_within(upstream, 3.5) <= 4
    finally:
        upstream.stop()


def test_a_proxy_answering_502_for_a_dead_upstream_keeps_the_backoff(agents, tmp_path):
    port = free_port()
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(
        f"http://127.0.0.1:{port}", retry_on_failure=FIXED_RETRY, sending_queue={"num_consumers": 2})})
    upstream = Upstream(port, status=502).start()  # it accepts TCP: a watch would always see it reachable
    try:
        agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
        for _ in range(2):
            send_spans("http", agent.http_port, 50)
        # three failures in a row take the link offline (edgeagent.exporters.link.OFFLINE_AFTER)
        wait_until(lambda: upstream.attempts >= 4, timeout=30, message="the link seen offline")
        start = upstream.attempts
        time.sleep(4)
        # offline: one probe at a time, one a second (two consumers on their own would make eight or more)
        assert len(upstream.calls) - start <= 5
    finally:
        upstream.stop()


def test_kafka_backlog_drains_within_seconds_of_the_broker_listening_again(agents, kafka, tmp_path):
    kafka.create_topic("otlp_spans", 2)
    config = edge_config(tmp_path / "edge.yaml", kafka.bootstrap, retry_on_failure=SLOW_RETRY, timeout="2s")
    edge = agents(["run", "--config", config, "--state-dir", str(tmp_path / "edge")])
    first = send_spans("grpc", edge.grpc_port, 10, must_deliver=True)
    wait_for_spans(kafka, first, edge, timeout=30)  # the producer is connected

    kafka.kill()  # its port refuses connections: the producer's sends time out, no broker accepts
    send_spans("grpc", edge.grpc_port, 100, batch=100, must_deliver=True)
    _wait_failed(edge, "kafka")  # the send timed out after 2 s: now in its 20 s backoff
    kafka.start()
    listening = time.monotonic()
    kafka.create_topic("otlp_spans", 2, exist_ok=True)
    wait_until(lambda: edge.metric("edgeagent_queue_items", exporter="kafka", data_type="traces") == 0,
               timeout=60, interval=0.2, message="the edge's queue drained into Kafka")
    took = time.monotonic() - listening
    assert took < 8, f"the edge took {took:.1f}s to deliver once the broker listened again"
