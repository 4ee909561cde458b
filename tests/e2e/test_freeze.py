"""The agent's process frozen and thawed: an IoT gateway that suspends, a VM its host pauses, a
container the cgroup freezer freezes. SIGSTOP and SIGCONT do to the real agent what those do: it
does not run while the monotonic clock goes on, and every timer that fell due meanwhile fires at
once when it runs again. The freezes here are seconds long, against timeouts shortened to match."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags, set_span_in_context

from tests.e2e.test_tail_sampling import _config as tail_sampling_config
from tests.helpers.configs import grpc_exporter, http_exporter, traces_config
from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.traces import Client, span_ids_by_trace
from tests.helpers.upstream import Upstream

pytestmark = pytest.mark.e2e


@contextmanager
def frozen(agent) -> Iterator[None]:
    """The agent's process stopped for the block, and let go on after it whatever the block does."""
    os.kill(agent.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(agent.process.pid, signal.SIGCONT)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_an_answer_that_came_while_the_agent_was_frozen_is_read_not_timed_out_and_sent_again(
        agents, tmp_path, transport):
    # the request is on its way when the agent freezes; the upstream answers it during the freeze,
    # long before the freeze is over. The attempt's timeout fell due meanwhile too, and fired in the
    # turn of the loop that the answer arrived in: the request was sent again, and the chain took
    # the link for a slow one and cut every request after it to 64 kB.
    port = free_port()
    batching = {"num_consumers": 1, "batch": {"min_size": 0}}
    if transport == "http":
        upstream: Upstream | GrpcUpstream = Upstream(port, hang=0.5).start()
        exporters = {"otlphttp": http_exporter(f"http://127.0.0.1:{port}", timeout="2s", sending_queue=batching)}
    else:
        upstream = GrpcUpstream(port, hang=0.5).start()
        exporters = {"otlp": grpc_exporter(f"127.0.0.1:{port}", timeout="2s", sending_queue=batching)}
    try:
        agent = agents(["run", "--config", traces_config(tmp_path / "config.yaml", exporters)])
        sent = send_spans("http", agent.http_port, 2000, batch=1000)  # two records of about 80 kB
        wait_until(lambda: upstream.attempts >= 1, timeout=10, message="the first request on its way")
        with frozen(agent):
            time.sleep(3.0)  # the answer comes 0.5 s after the request; the timeout falls due at 2 s
        wait_until(lambda: upstream.span_ids() >= sent, timeout=10, interval=0.1, message="every span delivered")
        # every attempt's spans are kept by the upstream: a request sent again would be counted twice
        # (how many requests carry the spans is the SDK's batching, which a loaded machine changes)
        assert len(upstream.spans()) == len(sent), "a request answered during the freeze was sent again"
        assert "sending smaller requests" not in agent.log()
        # said by the heartbeat's first look after the thaw, which a loaded machine may run later
        wait_until(lambda: "the agent did not run for a while" in agent.log(), timeout=5, interval=0.1,
                   message="the freeze said in the log")
    finally:
        upstream.stop()


def test_a_freeze_longer_than_max_elapsed_time_does_not_end_the_retries_of_a_request(agents, tmp_path):
    # the upstream answers 503 and the agent backs off; it is frozen for longer than max_elapsed_time.
    # The first attempt after the thaw fails too, and the retry counted the freeze as time the upstream
    # had failed: it gave up after that one attempt, and the consumer waited max_interval (30 s) before
    # it sent the data again, though the upstream took it a moment later.
    port = free_port()
    upstream = Upstream(port, status=503).start()
    retry = {"initial_interval": "1s", "randomization_factor": 0, "max_interval": "30s", "max_elapsed_time": "3s"}
    exporters = {"otlphttp": http_exporter(f"http://127.0.0.1:{port}", timeout="2s", retry_on_failure=retry)}
    try:
        agent = agents(["run", "--config", traces_config(tmp_path / "config.yaml", exporters)])
        sent = send_spans("http", agent.http_port, 100, batch=100)
        wait_until(lambda: upstream.attempts >= 1, timeout=10, message="the first attempt")
        with frozen(agent):
            time.sleep(4.0)
        thawed = time.monotonic()
        wait_until(lambda: upstream.attempts >= 2, timeout=5, message="the attempt due during the freeze")
        upstream.status = 200
        wait_until(lambda: upstream.span_ids() >= sent, timeout=8, interval=0.1, message="the spans delivered")
        assert time.monotonic() - thawed < 5
        assert "still failing after retries" not in agent.log()
    finally:
        upstream.stop()


def test_spans_sent_while_the_agent_was_frozen_join_their_trace_before_it_is_decided(agents, upstream, tmp_path):
    # five traces of plain spans; half a second later (decision_wait is 2 s) the agent freezes, and
    # meanwhile the client sends each trace an error span, which the status_code policy keeps. The
    # freeze outlasts decision_wait: counted on the clock, every trace was due when the agent ran
    # again and was decided (dropped) before the error spans waiting in its sockets were read, and
    # those were then dropped as late spans of dropped traces.
    agent = agents(["run", "--config", tail_sampling_config(tmp_path, wait="2s"),
                    "--state-dir", str(tmp_path / "state")], env={"UPSTREAM": upstream.url})
    client = Client(agent.http_port)
    traces = dict(client.trace("plain") for _ in range(5))
    client.flush()
    time.sleep(0.5)

    def errors() -> None:
        for trace_id, spans in traces.items():
            parent = set_span_in_context(NonRecordingSpan(SpanContext(trace_id, next(iter(spans)), True,
                                                                      TraceFlags(1))))
            with client.tracer.start_as_current_span("refund", context=parent) as span:
                span.set_status(Status(StatusCode.ERROR, "refund failed"))
                spans.add(span.get_span_context().span_id)
        client.flush()

    sender = threading.Thread(target=errors)
    with frozen(agent):
        sender.start()
        time.sleep(3.0)
    sender.join(15)
    wait_until(lambda: span_ids_by_trace(upstream) == traces, timeout=6, interval=0.1,
               message="every trace kept whole")
    client.close()


def test_a_body_whose_rest_came_while_the_agent_was_frozen_is_read_not_refused_for_read_timeout(agents, tmp_path):
    # the client sent half its body, the agent froze, the client sent the rest: when the agent ran
    # again read_timeout (2 s) had passed on the clock, and it answered 408 to a body it had whole
    port = free_port()
    upstream = Upstream(port).start()
    try:
        config = traces_config(tmp_path / "config.yaml", {"otlphttp": http_exporter(f"http://127.0.0.1:{port}")})
        agent = agents(["run", "--config", config, "--set", "receivers::otlp::protocols::http::read_timeout=2s"])
        _, body = _one_span_request()
        connection = socket.create_connection(("127.0.0.1", agent.http_port), timeout=10)
        with connection:
            connection.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: agent\r\nContent-Type: application/x-protobuf\r\n"
                               f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
            time.sleep(0.3)
            with frozen(agent):
                connection.sendall(body[len(body) // 2:])
                time.sleep(3.0)
            status_line = connection.recv(4096).split(b"\r\n", 1)[0]
        assert status_line == b"HTTP/1.1 200 OK"
        wait_until(lambda: len(upstream.spans()) == 1, timeout=5, message="the span delivered")
    finally:
        upstream.stop()


def _one_span_request() -> tuple[bytes, bytes]:
    """A request of one span with a long name (a body of some kB); its span id and its bytes."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(trace_id=os.urandom(16), span_id=os.urandom(8),
                                                                    name="x" * 4000)
    return span.span_id, request.SerializeToString()
