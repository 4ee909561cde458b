"""Tail sampling on two hub replicas sharing their decisions through one real redis-server: a late
span follows its trace's decision on the replica that never saw the trace, and Redis going away
and coming back neither stops nor confuses an agent. Real agent processes, SDK clients, upstreams."""

from __future__ import annotations

import time

import pytest
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags, set_span_in_context

from tests.e2e.test_tail_sampling import _config
from tests.helpers.forwarder import Forwarder
from tests.helpers.net import free_port, wait_until
from tests.helpers.redis_server import RedisServer
from tests.helpers.traces import Client
from tests.helpers.traces import span_ids_by_trace as _span_ids
from tests.helpers.upstream import Upstream

SHARED = """\
    shared_state:
      redis: {url: "%s", flush_interval: 2ms}"""


@pytest.fixture
def second_upstream():
    server = Upstream(free_port()).start()
    yield server
    server.stop()


def _replica(agents, tmp_path, name: str, upstream, redis_server, wait: str = "1s"):
    config = _config(tmp_path, wait=wait, extra=SHARED % redis_server.url)
    return agents(["run", "--config", config, "--state-dir", str(tmp_path / name)], env={"UPSTREAM": upstream.url})


def _late_error_span(client: Client, trace_id: int, parent: int) -> int:
    """A late span that the policies alone would keep: it carries an error."""
    context = set_span_in_context(NonRecordingSpan(SpanContext(trace_id, parent, True, TraceFlags(1))))
    with client.tracer.start_as_current_span("late-failure", context=context) as span:
        span.set_status(Status(StatusCode.ERROR, "late failure"))
        return span.get_span_context().span_id


def _decision_key(trace_id: int) -> bytes:
    return b"edgeagent:decision:" + trace_id.to_bytes(16, "big").hex().encode()


def test_a_late_span_follows_the_decision_another_replica_made(agents, upstream, second_upstream, redis_server,
                                                              tmp_path):
    replica_a = _replica(agents, tmp_path, "a", upstream, redis_server)
    replica_b = _replica(agents, tmp_path, "b", second_upstream, redis_server)
    client_a, client_b = Client(replica_a.http_port), Client(replica_b.http_port)
    kept_trace, kept_spans = client_a.trace("error")
    dropped_trace, dropped_spans = client_a.trace("plain")
    client_a.flush()
    wait_until(lambda: _span_ids(upstream).get(kept_trace) == kept_spans, timeout=30, message="A keeps its trace")
    with redis_server.client() as redis:
        wait_until(lambda: redis.get(_decision_key(dropped_trace)) == b"0", timeout=10, message="A's decisions shared")
        assert redis.get(_decision_key(kept_trace)) == b"1"

    # B never saw either trace; on its own it would drop a plain span and keep an error span
    late_kept = client_b.late_span(kept_trace, next(iter(kept_spans)))
    late_dropped = _late_error_span(client_b, dropped_trace, next(iter(dropped_spans)))
    client_b.flush()
    wait_until(lambda: _span_ids(second_upstream).get(kept_trace) == {late_kept}, timeout=10,
               message="B forwards the kept trace's late span")
    time.sleep(2.5)  # past B's decision_wait: had B buffered the other span, it would have kept it by now
    assert late_dropped not in {span for spans in _span_ids(second_upstream).values() for span in spans}
    assert set(_span_ids(second_upstream)) == {kept_trace}
    assert replica_b.metric("otelcol_processor_tail_sampling_sampling_late_spans", sampled="true") == 1
    assert replica_b.metric("otelcol_processor_tail_sampling_sampling_late_spans", sampled="false") == 1
    assert replica_b.metric("edgeagent_sampler_shared_state_found_decisions", sampled="true") == 1
    assert replica_b.metric("edgeagent_sampler_shared_state_found_decisions", sampled="false") == 1
    assert replica_b.metric("otelcol_processor_tail_sampling_global_count_traces_sampled") == 0
    assert replica_a.metric("edgeagent_sampler_shared_state_published_decisions") == 2
    assert replica_b.metric("edgeagent_sampler_shared_state_up") == 1
    client_a.close()
    client_b.close()


def test_a_replica_deciding_a_trace_follows_the_decision_already_in_redis(agents, upstream, redis_server, tmp_path):
    """Around a rebalance two replicas buffer parts of one trace; the one deciding second follows
    the first, whatever its own policies say of its part."""
    replica = _replica(agents, tmp_path, "b", upstream, redis_server, wait="3s")
    client = Client(replica.http_port)
    error_trace, _ = client.trace("error")  # the policies would keep it
    plain_trace, plain_spans = client.trace("plain")  # and drop this one
    client.flush()
    wait_until(lambda: replica.metric("otelcol_processor_tail_sampling_sampling_traces_on_memory") == 2,
               timeout=10, message="both traces buffered")
    with redis_server.client() as redis:  # another replica decided both first, the other way
        redis.set(_decision_key(error_trace), b"0", px=60_000)
        redis.set(_decision_key(plain_trace), b"1", px=60_000)
    wait_until(lambda: _span_ids(upstream).get(plain_trace) == plain_spans, timeout=30,
               message="the plain trace kept as Redis says")
    time.sleep(1.0)
    assert set(_span_ids(upstream)) == {plain_trace}
    assert replica.metric("edgeagent_sampler_shared_state_published_decisions") == 0  # nothing of its own
    client.close()


def test_redis_lost_and_back_while_an_agent_samples(agents, upstream, redis_server, tmp_path):
    replica = _replica(agents, tmp_path, "a", upstream, redis_server)
    client = Client(replica.http_port)
    redis_server.kill()

    # without Redis: decided by the local policies and caches, no error reaches the client
    kept_trace, kept_spans = client.trace("error")
    dropped_trace, dropped_spans = client.trace("plain")
    client.flush()
    wait_until(lambda: _span_ids(upstream).get(kept_trace) == kept_spans, timeout=30, message="local decision")
    assert replica.metric("edgeagent_sampler_shared_state_up") == 0
    late_kept = client.late_span(kept_trace, next(iter(kept_spans)))
    client.late_span(dropped_trace, next(iter(dropped_spans)))
    client.flush()
    wait_until(lambda: late_kept in _span_ids(upstream)[kept_trace], timeout=10, message="late span, local cache")
    time.sleep(2.5)
    assert set(_span_ids(upstream)) == {kept_trace}
    shared_state = replica.health()[1]["tail_sampling"]["tail_sampling"]["shared_state"]
    assert shared_state["up"] is False and shared_state["waiting_decisions"] >= 2  # kept for Redis

    # Redis back (empty): the agent reconnects, sends the decisions of the outage, shares new ones
    redis_server.start()
    wait_until(lambda: replica.metric("edgeagent_sampler_shared_state_up") == 1, timeout=30, message="reconnect")
    with redis_server.client() as redis:
        wait_until(lambda: (redis.get(_decision_key(kept_trace)), redis.get(_decision_key(dropped_trace)))
                   == (b"1", b"0"), timeout=10, message="the outage's decisions shared")
    assert replica.metric("edgeagent_sampler_shared_state_dropped_decisions", reason="unavailable") == 0
    new_trace, new_spans = client.trace("vip")
    client.flush()
    wait_until(lambda: _span_ids(upstream).get(new_trace) == new_spans, timeout=30, message="a trace after")
    with redis_server.client() as redis:
        wait_until(lambda: redis.get(_decision_key(new_trace)) == b"1", timeout=10, message="decision shared again")
    assert "unavailable" in replica.log() and "available again" in replica.log()
    client.close()


def test_a_failover_behind_the_endpoint_leaves_the_demoted_primary_and_shares_again(agents, upstream, redis_server,
                                                                                      tmp_path):
    """The primary the agent writes to becomes a replica (READONLY to every write) while new
    connections to the endpoint reach the new primary: the next decisions are shared there."""
    (tmp_path / "redis-b").mkdir()
    new_primary = RedisServer(str(tmp_path / "redis-b")).start()
    endpoint = Forwarder(free_port(), redis_server.port).start()
    try:
        replica = _replica(agents, tmp_path, "a", upstream, endpoint)
        client = Client(replica.http_port)
        first, first_spans = client.trace("error")
        client.flush()
        with redis_server.client() as redis:
            wait_until(lambda: redis.get(_decision_key(first)) == b"1", timeout=10, message="shared before")

        endpoint.target = new_primary.port
        with redis_server.client() as redis:
            redis.execute_command("REPLICAOF", "127.0.0.1", str(new_primary.port))
        failover = time.monotonic()
        kept, kept_spans = client.trace("error")
        dropped, _ = client.trace("plain")
        client.flush()
        with new_primary.client() as redis:  # decided decision_wait (1 s) after they came
            wait_until(lambda: (redis.get(_decision_key(kept)), redis.get(_decision_key(dropped))) == (b"1", b"0"),
                       timeout=10, interval=0.05, message="decisions shared at the new primary")
        assert time.monotonic() - failover < 3.5
        wait_until(lambda: _span_ids(upstream) == {first: first_spans, kept: kept_spans}, timeout=10,
                   message="the kept traces upstream")
        assert replica.metric("edgeagent_sampler_shared_state_dropped_decisions", reason="refused") == 0
        assert replica.metric("edgeagent_sampler_shared_state_up") == 1
        assert replica.log().count("shared decisions are unavailable") == 1, replica.log()
        client.close()
    finally:
        endpoint.stop()
        new_primary.kill()
