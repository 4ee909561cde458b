"""sending_queue.wait_for_result and block_on_overflow, with a real agent, real clients and a real upstream.

wait_for_result: the record is queued durably, and the client's answer is the upstream's: OK
only once delivered, the upstream's refusal for good as such, a retryable error when the retries
run out or the client's deadline passes; a record whose client was answered with an error is
the client's again, so its retry is no duplicate. block_on_overflow: a full queue makes the
client wait for room instead of refusing it at once.
"""

from __future__ import annotations

import threading
import time

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
      grpc:
exporters:
  otlphttp:
    endpoint: ${{env:UPSTREAM}}
    timeout: 2s
    retry_on_failure:
      initial_interval: 100ms
      max_interval: 200ms
      max_elapsed_time: {max_elapsed}
    sending_queue:
{queue}
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"""


def _config(tmp_path, queue: str, max_elapsed: str = "1s") -> str:
    path = tmp_path / "waits.yaml"
    path.write_text(CONFIG.format(queue="\n".join("      " + line for line in queue.splitlines()),
                                  max_elapsed=max_elapsed))
    return str(path)


def _request(span: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="wait", span_id=bytes([span]) * 8,
                                                              trace_id=b"\x07" * 16)
    return request


def _received(upstream: Upstream) -> list[bytes]:
    """Every span id the upstream accepted, duplicates included."""
    return [span.span_id for received in upstream.requests for rs in received.message.resource_spans
            for ss in rs.scope_spans for span in ss.spans]


def _grpc_export(port: int, span: int, timeout: float) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary(TRACE_METHOD, request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=lambda b: b)
        try:
            export(_request(span), timeout=timeout)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK


def test_wait_for_result_answers_with_the_upstreams_outcome_and_never_duplicates(agents, tmp_path):
    port = free_port()
    agent = agents(["run", "--config", _config(tmp_path, "wait_for_result: true"), "--state-dir",
                    str(tmp_path / "state")], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    started = time.monotonic()
    status, headers = post(agent.http_port, _request(1))
    assert status == 503 and headers.get("Retry-After")  # upstream down: retries ran out, retryable for the client
    assert time.monotonic() - started >= 0.5  # not refused at once: the chain retried until max_elapsed_time
    assert agent.metric("otelcol_exporter_queue_size", exporter="otlphttp") == 0  # the client owns it again

    upstream = Upstream(port).start()
    try:
        assert post(agent.http_port, _request(1))[0] == 200  # the client's retry
        assert _received(upstream) == [b"\x01" * 8]  # delivered before the OK
        upstream.hang = 1.5
        started = time.monotonic()
        assert post(agent.http_port, _request(2))[0] == 200
        assert time.monotonic() - started >= 1.5 and b"\x02" * 8 in _received(upstream)
        upstream.hang = 0.0
        upstream.status = 400
        assert post(agent.http_port, _request(3))[0] == 400  # refused for good: the upstream's answer
        upstream.status = 200
        time.sleep(1.5)  # nothing refused or answered comes back later
        assert sorted(_received(upstream)) == [b"\x01" * 8, b"\x02" * 8]
        assert agent.metric("otelcol_exporter_queue_size", exporter="otlphttp") == 0
    finally:
        upstream.stop()
    assert agent.terminate() == 0


def test_wait_for_result_gives_the_record_back_to_a_grpc_client_whose_deadline_passed(agents, tmp_path):
    port = free_port()
    agent = agents(["run", "--config", _config(tmp_path, "wait_for_result: true", max_elapsed="5m"),
                    "--state-dir", str(tmp_path / "state")], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    started = time.monotonic()
    # the client's own deadline, or the agent's answer at that deadline when the client's timer fires late (a
    # loaded machine): either way a failure the client retries, at its deadline
    assert _grpc_export(agent.grpc_port, 1, timeout=1.5) in (grpc.StatusCode.DEADLINE_EXCEEDED,
                                                            grpc.StatusCode.UNAVAILABLE)
    assert 1.4 < time.monotonic() - started < 5  # the client's deadline, not sooner, nor the chain's five minutes
    deadline = time.monotonic() + 5
    while agent.metric("otelcol_exporter_queue_size", exporter="otlphttp") and time.monotonic() < deadline:
        time.sleep(0.1)  # the lease that was retrying it stops: the client gave up on it
    assert agent.metric("otelcol_exporter_queue_size", exporter="otlphttp") == 0

    upstream = Upstream(port).start()
    try:
        assert _grpc_export(agent.grpc_port, 1, timeout=10) == grpc.StatusCode.OK  # the client's retry
        upstream.status = 400
        assert _grpc_export(agent.grpc_port, 2, timeout=10) == grpc.StatusCode.INVALID_ARGUMENT  # as otelcol maps it
        time.sleep(1.0)
        assert _received(upstream) == [b"\x01" * 8]  # once: the abandoned copy was not sent as well
    finally:
        upstream.stop()
    assert agent.terminate() == 0


def test_block_on_overflow_holds_the_client_until_the_queue_has_room(agents, tmp_path):
    port = free_port()
    queue = "queue_size: 2\nnum_consumers: 1\nblock_on_overflow: true"
    agent = agents(["run", "--config", _config(tmp_path, queue, max_elapsed="5m"), "--state-dir",
                    str(tmp_path / "state")], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    assert post(agent.http_port, _request(1))[0] == 200
    assert post(agent.http_port, _request(2))[0] == 200  # the queue is at its cap now
    answers: list[tuple[int, float]] = []

    def blocked() -> None:
        started = time.monotonic()
        answers.append((post(agent.http_port, _request(3))[0], time.monotonic() - started))
    client = threading.Thread(target=blocked)
    client.start()
    time.sleep(2.0)
    assert answers == []  # still waiting for room, not refused
    upstream = Upstream(port).start()
    try:
        client.join(20)
        assert answers and answers[0][0] == 200 and answers[0][1] >= 2.0
        deadline = time.monotonic() + 10
        while len(set(_received(upstream))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(_received(upstream)) == {bytes([span]) * 8 for span in (1, 2, 3)}
    finally:
        upstream.stop()
    assert agent.terminate() == 0


def test_block_on_overflow_ends_in_a_retryable_refusal_at_the_grpc_deadline(agents, tmp_path):
    port = free_port()
    queue = "queue_size: 1\nblock_on_overflow: true"
    agent = agents(["run", "--config", _config(tmp_path, queue, max_elapsed="5m"), "--state-dir",
                    str(tmp_path / "state")], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    assert _grpc_export(agent.grpc_port, 1, timeout=5) == grpc.StatusCode.OK
    started = time.monotonic()
    # the agent ends the wait at the call's deadline with RESOURCE_EXHAUSTED; the client's own timer
    # fires at the same moment and says DEADLINE_EXCEEDED when it comes first: either is the refusal
    assert _grpc_export(agent.grpc_port, 2, timeout=1.0) in (grpc.StatusCode.DEADLINE_EXCEEDED,
                                                             grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert 0.9 <= time.monotonic() - started < 4
    # counted once, when refused (the agent's own deadline may pass just after the client's), not
    # for every time it found the queue still full
    refused = lambda: agent.metric("otelcol_exporter_enqueue_failed_spans", exporter="otlphttp")  # noqa: E731
    wait_until(lambda: refused() >= 1, timeout=10, interval=0.05, message="the refusal counted")
    time.sleep(0.5)
    assert refused() == 1
    assert agent.terminate() == 0


def test_wait_for_result_answers_an_http_client_before_write_timeout_closes_its_connection(agents, tmp_path):
    port = free_port()
    config = _config(tmp_path, "wait_for_result: true", max_elapsed="5m")
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state"),
                    "--set", "receivers::otlp::protocols::http::write_timeout=3s"],
                   env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    started = time.monotonic()
    status, headers = post(agent.http_port, _request(1))
    assert status == 503 and headers.get("Retry-After")  # an answer, where the connection would just close
    assert 2.0 <= time.monotonic() - started < 3.0
    deadline = time.monotonic() + 5
    while agent.metric("otelcol_exporter_queue_size", exporter="otlphttp") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agent.metric("otelcol_exporter_queue_size", exporter="otlphttp") == 0
    assert agent.terminate() == 0


def test_clients_waiting_for_a_result_or_for_room_are_answered_when_the_agent_stops(agents, tmp_path):
    port = free_port()
    config = _config(tmp_path, "wait_for_result: true\nqueue_size: 1\nnum_consumers: 1\nblock_on_overflow: true",
                     max_elapsed="5m")
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")],
                   env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    answers: list[int] = []
    clients = [threading.Thread(target=lambda span=span: answers.append(post(agent.http_port, _request(span))[0]))
               for span in (1, 2)]  # the first waits for its delivery, the second for room
    for client in clients:
        client.start()
        time.sleep(0.5)
    assert answers == []
    started = time.monotonic()
    assert agent.terminate() == 0
    for client in clients:
        client.join(10)
    assert sorted(answers) == [503, 503] and time.monotonic() - started < 5


def test_an_sdk_client_retrying_through_an_outage_delivers_every_span_exactly_once(agents, tmp_path):
    port = free_port()
    agent = agents(["run", "--config", _config(tmp_path, "wait_for_result: true"), "--state-dir",
                    str(tmp_path / "state")], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    upstream = Upstream(port)
    comes_back = threading.Timer(1.5, upstream.start)  # while the SDK retries
    comes_back.start()
    try:
        sent = send_spans("http", agent.http_port, 300, batch=100)
        received = _received(upstream)  # at the SDK's last OK: every span is upstream, once
        assert len(received) == len(set(received)) == 300 and set(received) == sent
    finally:
        comes_back.join()
        upstream.stop()
    assert agent.terminate() == 0
