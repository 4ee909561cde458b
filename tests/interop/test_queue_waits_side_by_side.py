"""sending_queue.wait_for_result and block_on_overflow, otelcol 0.165 and edgeagent side by side:
the same config, the same upstream answers, the same answers to the client."""

from __future__ import annotations

import http.client
import time

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.net import free_port
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

pytestmark = pytest.mark.e2e

RETRY = {"initial_interval": "100ms", "max_interval": "200ms", "max_elapsed_time": "1s"}


def _config(http_port: int, upstream: str, queue: dict, retry: dict) -> dict:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "exporters": {"otlp_http": {"endpoint": upstream, "compression": "none", "retry_on_failure": retry,
                                    "sending_queue": queue}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_http"]}}},
    }


def _request(span: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="side", span_id=bytes([span]) * 8,
                                                              trace_id=b"\x09" * 16)
    return request


def _start_both(agents, otelcol, tmp_path, upstream_url: str, queue: dict, retry: dict) -> tuple[int, int]:
    """otelcol and edgeagent with one config; their OTLP/HTTP ports."""
    theirs = free_port()
    otelcol(_config(theirs, upstream_url, queue, retry))
    config = _config(0, upstream_url, queue, retry)
    config["extensions"] = {"health_check": {}}
    config["service"]["extensions"] = ["health_check"]
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    agent = agents(["run", "--config", str(path), "--state-dir", str(tmp_path / "state")])
    return theirs, agent.http_port


def _delivered_before_answer(port: int, upstream: Upstream, span: int) -> tuple[int, bool]:
    status, _ = post(port, _request(span))
    ids = {s.span_id for r in upstream.requests for rs in r.message.resource_spans for ss in rs.scope_spans
           for s in ss.spans}
    return status, bytes([span]) * 8 in ids


def test_wait_for_result_answers_as_otelcol_does(agents, otelcol, tmp_path):
    upstream = Upstream(free_port()).start()
    try:
        ports = _start_both(agents, otelcol, tmp_path, upstream.url, {"wait_for_result": True}, RETRY)
        outcomes: dict[str, list] = {}
        for name, port, base in (("otelcol", ports[0], 10), ("edgeagent", ports[1], 20)):
            upstream.status = 200
            delivered = _delivered_before_answer(port, upstream, base + 1)
            upstream.status = 400
            refused = post(port, _request(base + 2))[0]
            upstream.status = 503
            started = time.monotonic()
            exhausted = post(port, _request(base + 3))[0]
            outcomes[name] = [delivered, refused, exhausted, time.monotonic() - started >= 0.5]  # retried
        assert outcomes["edgeagent"] == outcomes["otelcol"] == [(200, True), 400, 503, True]
    finally:
        upstream.stop()


def test_block_on_overflow_holds_the_client_as_otelcol_does(agents, otelcol, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the queue only fills
    # retries that outlast the test: otelcol would drop the first request when they run out (edgeagent keeps it)
    ports = _start_both(agents, otelcol, tmp_path, down,
                        {"queue_size": 1, "num_consumers": 1, "block_on_overflow": True},
                        dict(RETRY, max_elapsed_time="5m"))
    results: dict[str, list] = {}
    for name, port in (("otelcol", ports[0]), ("edgeagent", ports[1])):
        first = post(port, _request(1))[0]
        results[name] = [first, _answer_within(port, 2.0)]  # the second is still waiting for room
    assert results["edgeagent"] == results["otelcol"] == [200, None]


def _answer_within(port: int, seconds: float) -> int | None:
    """The status a second request is answered with within `seconds`, None while it waits. Its connection
    is closed then: otelcol, stopped with a request it holds, took 10 s and a SIGKILL to exit."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=seconds)
    try:
        connection.request("POST", "/v1/traces", body=_request(2).SerializeToString(),
                           headers={"Content-Type": "application/x-protobuf"})
        return connection.getresponse().status
    except TimeoutError:
        return None
    finally:
        connection.close()
