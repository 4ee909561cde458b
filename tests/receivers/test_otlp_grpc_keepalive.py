"""otelcol's gRPC keepalive keys on the OTLP receiver, against a real agent and a real grpc client."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        read_buffer_size: 524288
        write_buffer_size: 65536
        keepalive: {keepalive}
exporters:
  debug:
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"""
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Watched:
    """A channel whose connectivity changes are recorded as they happen."""

    def __init__(self, port: int, options: list[tuple[str, int]] | None = None):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options or [])
        self.states: list[grpc.ChannelConnectivity] = []
        self._lock = threading.Lock()
        self.channel.subscribe(self._changed, try_to_connect=True)

    def _changed(self, state: grpc.ChannelConnectivity) -> None:
        with self._lock:
            self.states.append(state)

    def export(self) -> None:
        call = self.channel.unary_unary(EXPORT, request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=lambda b: b)
        call(ExportTraceServiceRequest(), timeout=10)

    def left_ready_within(self, seconds: float) -> bool:
        """Whether the connection was dropped (READY -> IDLE or failure) within `seconds` of now."""
        start = self._ready_index() + 1
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                if any(state is not grpc.ChannelConnectivity.READY for state in self.states[start:]):
                    return True
            time.sleep(0.05)
        return False

    def _ready_index(self) -> int:
        """Where the call's READY is among the states: grpcio delivers them on its own thread,
        under load after the call returned, and an IDLE noted late is no drop."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            with self._lock:
                ready = [i for i, state in enumerate(self.states) if state is grpc.ChannelConnectivity.READY]
            if ready:
                return ready[-1]
            time.sleep(0.01)
        raise AssertionError(f"the channel never reported READY: {self.states}")

    def close(self) -> None:
        self.channel.unsubscribe(self._changed)
        self.channel.close()


def _agent(agents, tmp_path, keepalive: str):
    config = tmp_path / "keepalive.yaml"
    config.write_text(CONFIG.replace("{keepalive}", keepalive))
    return agents(["run", "--config", str(config)])


@pytest.mark.parametrize(("keepalive", "dropped"), [
    ("{server_parameters: {max_connection_idle: 1s}}", True),
    ("{server_parameters: {max_connection_age: 1s, max_connection_age_grace: 1s}}", True),
    ("{}", False),  # grpc's defaults: an idle connection stays for hours
])
def test_server_parameters_end_idle_and_old_connections(agents, tmp_path, keepalive, dropped):
    agent = _agent(agents, tmp_path, keepalive)
    client = Watched(agent.grpc_port)
    try:
        client.export()
        assert client.left_ready_within(4.0) is dropped
        client.export()  # a dropped connection is simply made again
    finally:
        client.close()


PINGING_CLIENT = [("grpc.keepalive_time_ms", 500), ("grpc.keepalive_timeout_ms", 5000),
                  ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]


@pytest.mark.parametrize(("keepalive", "dropped"), [
    ("{enforcement_policy: {min_time: 100ms, permit_without_stream: true}}", False),
    ("{enforcement_policy: {min_time: 10s, permit_without_stream: true}}", True),  # pings too often
])
def test_enforcement_policy_decides_whether_a_pinging_client_is_too_eager(agents, tmp_path, keepalive, dropped):
    agent = _agent(agents, tmp_path, keepalive)
    client = Watched(agent.grpc_port, PINGING_CLIENT)
    try:
        client.export()
        assert client.left_ready_within(5.0) is dropped
    finally:
        client.close()


def test_a_zero_max_recv_msg_size_mib_is_grpcs_default_and_a_negative_one_an_error():
    from pydantic import ValidationError

    from edgeagent.receivers.otlp import GrpcConfig
    from edgeagent.receivers.otlp_grpc import limits

    assert limits(GrpcConfig(max_recv_msg_size_mib=0)).max_message_bytes == 4 << 20
    with pytest.raises(ValidationError, match="max_recv_msg_size_mib"):
        GrpcConfig(max_recv_msg_size_mib=-1)
