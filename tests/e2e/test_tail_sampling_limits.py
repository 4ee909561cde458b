"""otelcol's tail_sampling limits, honoured: maximum_trace_size_bytes, block_on_overflow and
drop_pending_traces_on_shutdown. Real agent process, real SDK client, real upstream."""

from __future__ import annotations

import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.test_tail_sampling import _config
from tests.helpers.cli import cli_json
from tests.helpers.net import wait_until
from tests.helpers.otlp_post import post
from tests.helpers.traces import Client, span_ids_by_trace

ALL = "      - {name: all, type: always_sample}"


def _post_trace(port: int, trace: int, spans: int = 1) -> int:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(spans):
        scope.spans.add(
            name="s", trace_id=trace.to_bytes(16, "big"), span_id=(trace * 100 + index + 1).to_bytes(8, "big")
        )
    status, _ = post(port, request)
    return status


def test_a_trace_over_maximum_trace_size_bytes_is_dropped_and_counted(agents, upstream, tmp_path):
    config = _config(tmp_path, wait="1s", policies=ALL, extra="    maximum_trace_size_bytes: 2000")
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")], env={"UPSTREAM": upstream.url})
    client = Client(agent.http_port)
    small, small_spans = client.trace("plain", children=2)
    large, _ = client.trace("plain", children=60)
    client.close()
    wait_until(lambda: small in span_ids_by_trace(upstream), timeout=15, message="the small trace kept")
    time.sleep(1.5)
    assert span_ids_by_trace(upstream) == {small: small_spans}
    assert agent.metric("otelcol_processor_tail_sampling_traces_dropped_too_large") == 1


def test_block_on_overflow_holds_new_traces_until_room_instead_of_deciding_early(agents, upstream, tmp_path):
    config = _config(tmp_path, wait="1s", num_traces=3, policies=ALL, extra="    block_on_overflow: true")
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")], env={"UPSTREAM": upstream.url})
    for trace in range(1, 4):
        assert _post_trace(agent.http_port, trace) == 200
    started = time.monotonic()
    assert _post_trace(agent.http_port, 4) == 200  # waited for the first three to be decided
    assert time.monotonic() - started > 0.5
    wait_until(lambda: len(upstream.spans()) == 4, timeout=15, message="every trace delivered")
    assert agent.metric("otelcol_processor_tail_sampling_sampling_trace_dropped_too_early") == 0


def test_drop_pending_traces_on_shutdown_empties_the_buffer(agents, upstream, tmp_path):
    state = tmp_path / "state"
    config = _config(tmp_path, wait="60s", policies=ALL, extra="    drop_pending_traces_on_shutdown: true")
    agent = agents(["run", "--config", config, "--state-dir", str(state)], env={"UPSTREAM": upstream.url})
    for trace in range(1, 6):
        assert _post_trace(agent.http_port, trace, spans=3) == 200
    assert agent.terminate() == 0
    assert "dropped its pending traces at shutdown" in agent.log()
    again = agents(["run", "--config", config, "--state-dir", str(state)], env={"UPSTREAM": upstream.url})
    assert cli_json(state, "status")["tail_sampling"]["tail_sampling"]["buffered_traces"] == 0
    assert again.process.poll() is None and upstream.spans() == []
