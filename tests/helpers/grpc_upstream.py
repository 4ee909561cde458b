"""A real OTLP/gRPC server on loopback that records what it receives.

The gRPC counterpart of `tests.helpers.upstream.Upstream`: the generated OTLP service classes
on a grpcio server with its own thread pool, so synchronous tests can start, stop, inspect and
re-program it while the agent under test talks to it.

Every call is recorded as an `Attempt` (monotonic time, metadata, items, the code answered);
calls answered OK are also kept as `Received` with the parsed request. What the server
answers is programmable: a standing `Answer` (`code`, `retry_delay`, `rejected`), and
`script(...)` answers that are used first, one per call, in order. A `retry_delay` travels
as google.rpc.RetryInfo in a google.rpc.Status in the `grpc-status-details-bin` trailer,
as the OTLP specification asks for throttling.

gRPC decompresses before a handler runs, so what travelled is invisible to it. With
`count_wire_bytes=True` clients connect through a small TCP relay that counts the bytes they
send (`wire_bytes`), which shows whether a client compressed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from edgeagent.signals import Signal, count_items
from tests.helpers.upstream import SpanIndex, Upstream


@dataclass(frozen=True)
class Answer:
    """What the server answers one call: a status code, RetryInfo, or a partial success."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    retry_delay: float | None = None  # seconds, sent as google.rpc.RetryInfo with a non-OK code
    rejected: int = 0  # with OK: items reported as rejected in the partial_success field
    message: str = "refused by test upstream"


@dataclass
class Attempt:
    signal: str
    at: float  # time.monotonic() when the call arrived
    metadata: dict[str, str]
    items: int
    code: grpc.StatusCode


@dataclass
class Received:
    signal: str
    metadata: dict[str, str]
    message: object
    raw_size: int
    items: int


# signal -> (servicer base class, registration function, response class, partial-success field)
_SERVICES = {
    "traces": (trace_service_pb2_grpc.TraceServiceServicer, trace_service_pb2_grpc.add_TraceServiceServicer_to_server,
               trace_service_pb2.ExportTraceServiceResponse, "rejected_spans"),
    "metrics": (metrics_service_pb2_grpc.MetricsServiceServicer,
                metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server,
                metrics_service_pb2.ExportMetricsServiceResponse, "rejected_data_points"),
    "logs": (logs_service_pb2_grpc.LogsServiceServicer, logs_service_pb2_grpc.add_LogsServiceServicer_to_server,
             logs_service_pb2.ExportLogsServiceResponse, "rejected_log_records"),
}


@dataclass
class GrpcUpstream:
    port: int
    code: grpc.StatusCode = grpc.StatusCode.OK
    retry_delay: float | None = None
    rejected: int = 0
    requests: list[Received] = field(default_factory=list)
    calls: list[Attempt] = field(default_factory=list)

    count_wire_bytes: bool = False
    max_receive: int = 256 << 20  # grpc.max_receive_message_length: a larger message is RESOURCE_EXHAUSTED
    listen: str = ""  # a grpcio address to listen on instead of the port ("unix:/path", "unix-abstract:name")
    hang: float = 0.0  # seconds each call waits, once its request is recorded, before it is answered

    def __post_init__(self) -> None:
        self._server: grpc.Server | None = None
        self._relay: _CountingRelay | None = None
        self._lock = threading.Lock()
        self._span_index = SpanIndex()
        self._script: deque[Answer] = deque()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def wire_bytes(self) -> int:
        """Bytes clients sent over TCP (HTTP/2 frames included); needs count_wire_bytes=True."""
        if self._relay is None:
            raise RuntimeError("start the upstream with count_wire_bytes=True to count wire bytes")
        return self._relay.client_bytes

    @property
    def attempts(self) -> int:
        with self._lock:
            return len(self.calls)

    def script(self, *answers: Answer) -> GrpcUpstream:
        """Answer the next calls with these, in order; then the standing answer again."""
        with self._lock:
            self._script.extend(answers)
        return self

    def start(self) -> GrpcUpstream:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="grpc-upstream"),
                             options=[("grpc.max_receive_message_length", self.max_receive), ("grpc.so_reuseport", 0)])
        for signal, (base, register, response_class, rejected_field) in _SERVICES.items():
            servicer = type(f"Recording{base.__name__}", (base,),
                            {"Export": self._handler(signal, response_class, rejected_field)})()
            register(servicer, server)
        listen = "127.0.0.1:0" if self.count_wire_bytes else self.listen or self.endpoint
        bound = server.add_insecure_port(listen)
        if bound == 0:
            raise RuntimeError(f"gRPC upstream cannot listen on {listen}")
        server.start()
        self._server = server
        if self.count_wire_bytes:
            self._relay = _CountingRelay(self.port, bound)
        return self

    def _next_answer(self) -> Answer:
        with self._lock:
            if self._script:
                return self._script.popleft()
            return Answer(self.code, self.retry_delay, self.rejected)

    def _handler(self, signal: str, response_class, rejected_field: str):
        def export(_servicer, request, context: grpc.ServicerContext):
            metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
            items = count_items(Signal.parse(signal), request)
            answer = self._next_answer()
            with self._lock:
                self.calls.append(Attempt(signal, time.monotonic(), metadata, items, answer.code))
            if answer.code != grpc.StatusCode.OK:
                if answer.retry_delay is not None:
                    context.set_trailing_metadata((("grpc-status-details-bin", _retry_status(answer)),))
                context.abort(answer.code, answer.message)
            with self._lock:
                self.requests.append(Received(signal, metadata, request, request.ByteSize(), items))
            if self.hang:
                time.sleep(self.hang)
            response = response_class()
            if answer.rejected:
                setattr(response.partial_success, rejected_field, answer.rejected)
                response.partial_success.error_message = "some items rejected by test upstream"
            return response

        return export

    def stop(self) -> None:
        if self._relay is not None:
            self._relay.close()
        if self._server is not None:
            server, self._server = self._server, None
            server.stop(grace=1).wait(10)

    # ---- what arrived ------------------------------------------------------------------------

    def attempts_of(self, signal: str = "traces") -> list[Attempt]:
        with self._lock:
            return [a for a in self.calls if a.signal == signal]

    # the HTTP upstream's accessors, over records of the same shape (`requests`, `_lock`, `_span_index`)
    received = Upstream.received
    spans = Upstream.spans
    span_ids = Upstream.span_ids
    log_records = Upstream.log_records
    data_points = Upstream.data_points


def _retry_status(answer: Answer) -> bytes:
    """A google.rpc.Status carrying RetryInfo, as the `grpc-status-details-bin` trailer wants it."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(answer.retry_delay * 1e9))
    status = status_pb2.Status(code=answer.code.value[0], message=answer.message)
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status.SerializeToString()


class _CountingRelay:
    """Forwards TCP connections from `port` to `target_port` on loopback, counting client bytes."""

    MAX_CONNECTIONS = 1000
    MAX_CHUNKS = 1_000_000  # per direction and connection: far above any test's traffic

    def __init__(self, port: int, target_port: int):
        self.target_port = target_port
        self.client_bytes = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, name="grpc-upstream-relay", daemon=True).start()

    def _accept(self) -> None:
        for _ in range(self.MAX_CONNECTIONS):
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                return  # closed by close()
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            for _ in range(self.MAX_CHUNKS):
                data = source.recv(1 << 16)
                if not data:
                    break
                if from_client:
                    with self._lock:
                        self.client_bytes += len(data)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()
