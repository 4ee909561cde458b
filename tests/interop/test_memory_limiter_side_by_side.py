"""The memory limiter's refusals side by side with otelcol 0.165's: a real edgeagent and a real
otelcol, each with a limit far below what it uses, refuse the same requests alike (HTTP 503, gRPC
UNAVAILABLE) and count the refused items in the same series, so that an alert built on otelcol's
`otelcol_receiver_refused_spans` or `otelcol_processor_memory_limiter_refused_spans` fires for both."""

from __future__ import annotations

from typing import Any

import grpc
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from tests.helpers.hostile import spans_request
from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

SPANS = 3


def _config(upstream: Upstream, http: str, grpc_endpoint: str) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": http}, "grpc": {"endpoint": grpc_endpoint}}}},
        # a limit below what either process uses once started: both refuse from their first check on
        "processors": {"memory_limiter": {"check_interval": "100ms", "limit_mib": 1}},
        "exporters": {"otlp_http": {"endpoint": upstream.url}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["memory_limiter"],
                                             "exporters": ["otlp_http"]}}},
    }


def _grpc_code(port: int) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            TraceServiceStub(channel).Export(ExportTraceServiceRequest.FromString(spans_request(SPANS)), timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_refused_requests_are_answered_and_counted_alike_in_both(agents, otelcol, tmp_path):
    upstream = Upstream(free_port()).start()
    try:
        config = tmp_path / "agent.yaml"
        settings = _config(upstream, "127.0.0.1:0", "127.0.0.1:0")
        settings["extensions"] = {"health_check": {}}
        settings["service"]["extensions"] = ["health_check"]
        config.write_text(yaml.safe_dump(settings))
        agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")])
        http_port, grpc_port = free_port(), free_port()
        reference = otelcol(_config(upstream, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"))
        wait_until(lambda: "Refusing data" in reference.log(), timeout=20, message="otelcol refusing")
        wait_until(lambda: agent.metric("edgeagent_memory_limiter_refusing") == 1, timeout=20,
                   message="edgeagent refusing")
        for ports in ((agent.http_port, agent.grpc_port), (http_port, grpc_port)):
            assert post(ports[0], spans_request(SPANS))[0] == 503
            assert _grpc_code(ports[1]) == grpc.StatusCode.UNAVAILABLE
        for name in ("otelcol_receiver_refused_spans", "otelcol_receiver_accepted_spans"):
            for transport in ("http", "grpc"):
                expected = reference.metric(name, receiver="otlp", transport=transport)
                assert agent.metric(name, receiver="otlp", transport=transport) == expected, (name, transport)
        assert reference.metric("otelcol_receiver_refused_spans", receiver="otlp") == 2 * SPANS
        assert agent.metric("otelcol_processor_memory_limiter_refused_spans", processor="memory_limiter") == \
            reference.metric("otelcol_processor_memory_limiter_refused_spans", processor="memory_limiter") == \
            2 * SPANS
        for name in ("otelcol_processor_incoming_items", "otelcol_processor_outgoing_items"):
            expected = reference.metric(name, processor="memory_limiter", otel_signal="traces")
            assert agent.metric(name, processor="memory_limiter", otel_signal="traces") == expected, name
        assert upstream.received("traces") == []
    finally:
        upstream.stop()
