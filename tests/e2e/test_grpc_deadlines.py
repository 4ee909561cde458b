"""A gRPC call's deadline (grpc-timeout) at the OTLP receiver of a real agent, with a real upstream.

The client used here writes its calls by hand and never gives up on them, so the agent's own
answer is what it reads, also after the deadline: the answer must be true to what the agent
kept. DEADLINE_EXCEEDED (or any error) means nothing of the request was kept, so the client's
retry is no duplicate; OK means it was, late or not.
"""

from __future__ import annotations

import time

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers import grpc_raw
from tests.helpers.agent import AgentProcess
from tests.helpers.net import free_port, wait_until
from tests.helpers.upstream import Upstream

OK, DEADLINE_EXCEEDED = grpc.StatusCode.OK.value[0], grpc.StatusCode.DEADLINE_EXCEEDED.value[0]

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  otlphttp:
    endpoint: ${env:UPSTREAM}
    retry_on_failure:
      initial_interval: 100ms
      max_interval: 200ms
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"""


def _request(span: int) -> bytes:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="deadline", span_id=span.to_bytes(8, "big"),
                                                              trace_id=b"\x07" * 16)
    return request.SerializeToString()


def _start(agents, tmp_path) -> tuple[AgentProcess, int]:
    config = tmp_path / "deadlines.yaml"
    config.write_text(CONFIG)
    port = free_port()
    agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
                   env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    return agent, port


def _delivered(agent: AgentProcess, port: int) -> list[int]:
    """Start the upstream and return the span ids it receives once the queue has drained, duplicates included."""
    upstream = Upstream(port).start()
    try:
        wait_until(lambda: agent.metric("otelcol_exporter_queue_size", exporter="otlphttp") == 0, timeout=20,
                   interval=0.1, message="the queue drained")
        time.sleep(0.5)  # nothing more comes
        return [int.from_bytes(span.span_id, "big") for received in upstream.requests
                for rs in received.message.resource_spans for ss in rs.scope_spans for span in ss.spans]
    finally:
        upstream.stop()


def test_a_spent_grpc_timeout_is_answered_deadline_exceeded_and_the_retry_is_no_duplicate(agents, tmp_path):
    """otelcol (grpc-go) answers a call whose deadline is spent on arrival DEADLINE_EXCEEDED before its
    receiver sees it; it was answered OK here, or refused after its commit had begun."""
    agent, port = _start(agents, tmp_path)
    spent = []
    for span, timeout in enumerate(["1n", "0S", "0m"], start=1):
        spent.append(grpc_raw.call(agent.grpc_port, _request(span), metadata=(("grpc-timeout", timeout),)))
        assert grpc_raw.call(agent.grpc_port, _request(span), metadata=(("grpc-timeout", "10S"),))[0] == OK
    assert sorted(_delivered(agent, port)) == [1, 2, 3]  # the retries, once each
    assert spent == [(DEADLINE_EXCEEDED, "context deadline exceeded")] * 3
    assert agent.metric("otelcol_receiver_accepted_spans") == 3
    assert agent.terminate() == 0


def test_a_deadline_passing_during_the_commit_is_answered_with_the_commits_outcome(agents, tmp_path):
    """Deadlines of a few milliseconds pass while a request is read, parsed or committed (the
    commit's fsync takes about as long): whichever it was, the answer says whether it was kept."""
    agent, port = _start(agents, tmp_path)
    answers = {span: grpc_raw.call(agent.grpc_port, _request(span),
                                   metadata=(("grpc-timeout", f"{1 + span % 8}m"),))[0] for span in range(1, 81)}
    assert set(answers.values()) <= {OK, DEADLINE_EXCEEDED}
    delivered = _delivered(agent, port)
    assert len(delivered) == len(set(delivered))
    assert sorted(delivered) == sorted(span for span, status in answers.items() if status == OK)
    assert agent.terminate() == 0


def test_spent_and_malformed_grpc_timeouts_get_otelcols_answers(agents, otelcol, tmp_path):
    """The answers otelcol's gRPC server (grpc-go) gives, before its receiver sees the call."""
    collector_port = free_port()
    collector = otelcol({"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{collector_port}"}}}},
                         "exporters": {"nop": {}},
                         "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["nop"]}}}})
    agent, _ = _start(agents, tmp_path)
    timeouts = ["1n", "0S", "0m", "1x", "123456789S", "S", "-1S", "1.5m", 'a"\\m']

    def answers(port: int) -> list[tuple[int, str]]:
        return [grpc_raw.call(port, _request(1), metadata=(("grpc-timeout", timeout),)) for timeout in timeouts]

    expected = answers(collector_port)
    assert [status for status, _ in expected] == [DEADLINE_EXCEEDED] * 3 + [grpc.StatusCode.INTERNAL.value[0]] * 6
    assert collector.metric("otelcol_receiver_accepted_spans") == 0
    assert answers(agent.grpc_port) == expected
