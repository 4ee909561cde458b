"""The `otlp` exporter end to end: the real agent sending to a real OTLP/gRPC server.

What the upstream answers decides what happens to the data, as the OTLP specification says:
UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, CANCELLED, OUT_OF_RANGE and DATA_LOSS are retried;
RESOURCE_EXHAUSTED is retried only when the server sends RetryInfo, after the delay it asks
for; every other code is permanent: one attempt, and the data goes to the dead-letter store.
"""

from __future__ import annotations

import time

import grpc
import pytest

from tests.helpers.cli import cli_json
from tests.helpers.configs import grpc_exporter, traces_config
from tests.helpers.grpc_upstream import Answer, GrpcUpstream
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans

Code = grpc.StatusCode
RETRYABLE = [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.ABORTED, Code.CANCELLED, Code.OUT_OF_RANGE,
             Code.DATA_LOSS]
PERMANENT = [Code.RESOURCE_EXHAUSTED, Code.INVALID_ARGUMENT, Code.PERMISSION_DENIED, Code.UNAUTHENTICATED,
             Code.NOT_FOUND, Code.FAILED_PRECONDITION, Code.UNIMPLEMENTED, Code.INTERNAL, Code.UNKNOWN]


@pytest.fixture
def grpc_upstream():
    server = GrpcUpstream(free_port()).start()
    yield server
    server.stop()


def _start(agents, tmp_path, endpoint: str, **settings):
    config = traces_config(tmp_path / "otlp.yaml", {"otlp": grpc_exporter(endpoint, **settings)})
    return agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])


def _queue_drained(agent) -> None:
    wait_until(lambda: agent.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=15,
               message="an empty queue (acks linger briefly before they commit)")


def test_spans_reach_a_grpc_upstream_with_configured_headers_as_metadata(agents, grpc_upstream, tmp_path):
    headers = {"x-tenant-id": "acme", "authorization": "Bearer edge-token"}
    agent = _start(agents, tmp_path, grpc_upstream.endpoint, headers=headers)
    sent = send_spans("http", agent.http_port, 500, batch=100) | send_spans("grpc", agent.grpc_port, 500, batch=100)

    wait_until(lambda: grpc_upstream.span_ids() >= sent, timeout=30, message="spans upstream")
    assert grpc_upstream.span_ids() == sent
    assert len(grpc_upstream.spans()) == len(sent)  # each span once
    for received in grpc_upstream.received("traces"):
        assert received.metadata["x-tenant-id"] == "acme"
        assert received.metadata["authorization"] == "Bearer edge-token"
    _queue_drained(agent)
    assert agent.metric("otelcol_exporter_sent_spans", exporter="otlp") == len(sent)
    assert agent.terminate() == 0


# the test upstream is a grpcio server, which takes gzip and identity only; zstd and snappy go to our
# own server in test_grpc_client.py and to otelcol in tests/interop
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_compression_setting_decides_what_goes_on_the_wire(agents, tmp_path, compression):
    upstream = GrpcUpstream(free_port(), count_wire_bytes=True).start()
    try:
        settings = {} if compression == "gzip" else {"compression": compression}  # gzip is the default
        agent = _start(agents, tmp_path, upstream.endpoint, **settings)
        sent = send_spans("http", agent.http_port, 2000)
        wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="spans upstream")
        assert upstream.span_ids() == sent
        raw = sum(received.raw_size for received in upstream.received("traces"))
        if compression != "none":
            assert upstream.wire_bytes < 0.75 * raw, (upstream.wire_bytes, raw)
        else:
            assert upstream.wire_bytes >= raw, (upstream.wire_bytes, raw)
        assert agent.terminate() == 0
    finally:
        upstream.stop()


def test_spans_accepted_while_the_grpc_upstream_is_down_arrive_when_it_returns(agents, tmp_path):
    port = free_port()
    agent = _start(agents, tmp_path, f"127.0.0.1:{port}")
    sent = send_spans("grpc", agent.grpc_port, 1000)
    wait_until(lambda: agent.health()[1]["exporters"]["otlp"]["upstream"] == "offline", timeout=15,
               message="the exporter reporting its upstream offline")
    time.sleep(2)  # let the channel back off a few times before the server appears

    upstream = GrpcUpstream(port).start()
    try:
        wait_until(lambda: upstream.span_ids() >= sent, timeout=30, interval=0.25, message="backlog delivered")
        assert upstream.span_ids() == sent
        _queue_drained(agent)
        assert agent.metric("edgeagent_upstream_online", exporter="otlp") == 1
        assert agent.terminate() == 0
    finally:
        upstream.stop()


def test_each_retryable_status_is_retried_until_the_data_arrives(agents, grpc_upstream, tmp_path):
    # One agent for every code, one after the other: each code's spans arrive before the next is scripted.
    agent = _start(agents, tmp_path, grpc_upstream.endpoint)
    for index, code in enumerate(RETRYABLE):
        grpc_upstream.script(Answer(code), Answer(code))  # then OK
        sent = send_spans("http", agent.http_port, 20)
        wait_until(lambda: grpc_upstream.span_ids() >= sent, timeout=30,  # noqa: B023
                   message=f"spans upstream after retries of {code.name}")
        attempts = grpc_upstream.attempts_of("traces")[3 * index:]
        assert [attempt.code for attempt in attempts] == [code, code, Code.OK], code.name
        assert all(attempt.items == 20 for attempt in attempts), code.name
    _queue_drained(agent)
    assert agent.metric("edgeagent_deadletter_items") == 0
    assert agent.terminate() == 0


@pytest.mark.parametrize("code", [Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE], ids=lambda code: code.name)
def test_retry_info_delay_is_waited_before_the_next_attempt(agents, grpc_upstream, tmp_path, code):
    delay = 2.5  # far above the 100 ms backoff the config would otherwise use
    grpc_upstream.script(Answer(code, retry_delay=delay))
    agent = _start(agents, tmp_path, grpc_upstream.endpoint)
    sent = send_spans("http", agent.http_port, 20)

    wait_until(lambda: grpc_upstream.span_ids() >= sent, timeout=30, message="spans upstream after the delay")
    first, second = grpc_upstream.attempts_of("traces")
    assert (first.code, second.code) == (code, Code.OK)
    assert second.at - first.at >= delay
    assert second.at - first.at < delay + 2  # the asked delay, not some long backoff
    assert agent.terminate() == 0


def test_each_permanent_status_is_tried_once_and_dead_lettered(agents, grpc_upstream, tmp_path):
    # One agent for every code, one after the other (nine agents took 20 s): each code's request is
    # dead-lettered before the next code is set, and the count of attempts at the end shows no retry.
    state = tmp_path / "state"
    agent = _start(agents, tmp_path, grpc_upstream.endpoint)
    for index, code in enumerate(PERMANENT, 1):
        grpc_upstream.code = code  # RESOURCE_EXHAUSTED without RetryInfo is permanent too
        send_spans("http", agent.http_port, 20)
        wait_until(lambda: agent.metric("edgeagent_deadletter_items") == 20 * index, timeout=30,  # noqa: B023
                   message=f"dead letters after {code.name}")
        assert grpc_upstream.attempts == index, code.name

    letters = cli_json(state, "queue", "dead-letter", "list")
    assert sorted((letter["items"], letter["status"]) for letter in letters) == sorted(
        (20, code.name) for code in PERMANENT)
    assert all("refused by test upstream" in letter["response"] for letter in letters)
    time.sleep(1)  # ten times the backoff: a retry would have happened by now
    assert grpc_upstream.attempts == len(PERMANENT)
    assert grpc_upstream.span_ids() == set()
    _queue_drained(agent)
    assert agent.terminate() == 0


def test_partial_success_is_acknowledged_counted_and_not_retried(agents, grpc_upstream, tmp_path):
    grpc_upstream.rejected = 3
    agent = _start(agents, tmp_path, grpc_upstream.endpoint)
    sent = send_spans("http", agent.http_port, 20)

    wait_until(lambda: grpc_upstream.span_ids() >= sent, timeout=30, message="spans upstream")
    _queue_drained(agent)
    assert grpc_upstream.attempts == 1
    assert agent.metric("edgeagent_exporter_rejected_spans", exporter="otlp") == 3
    assert agent.metric("otelcol_exporter_sent_spans", exporter="otlp") == 17
    assert agent.metric("edgeagent_deadletter_items") == 0
    assert agent.terminate() == 0


def test_metadata_echoed_in_the_details_never_reaches_dead_letters_or_logs(agents, grpc_upstream, tmp_path):
    secret = "grpc-5ecret-0b7e"
    grpc_upstream.script(Answer(code=Code.INVALID_ARGUMENT, message=f"bad request; x-api-key={secret} was sent"))
    agent = _start(agents, tmp_path, grpc_upstream.endpoint, headers={"x-tenant-key": secret})
    send_spans("http", agent.http_port, 5)

    wait_until(lambda: agent.metric("edgeagent_deadletter_items") == 5, timeout=30, message="dead letters")
    letters = cli_json(tmp_path / "state", "queue", "dead-letter", "list")
    assert "bad request" in letters[0]["response"] and secret not in str(letters)
    assert agent.terminate() == 0
    with open(agent.log_path, encoding="utf-8") as handle:
        assert secret not in handle.read()
