"""OTLP/gRPC server (grpc.aio): the Trace, Metrics and Logs services.

Requests arrive as raw bytes (no generated deserializer), so a request that no processor
changes is parsed once and stored as received. grpcio's own decompression is off: codec decodes
gzip and deflate messages with the bounded decoders HTTP uses (every gzip member, the limit
counted on output). grpcio's HTTP/2 layer refuses any other grpc-encoding (zstd, snappy) with
INTERNAL before a handler runs, and offers no way to register a decompressor. With `tls` the port serves TLS (mTLS with
`client_ca_file`); with `auth` every call must satisfy the named authenticator extension.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from edgeagent import auth, tls
from edgeagent.errors import BadRequestError, QueueFullError, RetryableError, UnauthenticatedError
from edgeagent.instrumentation import rpc_server_timer
from edgeagent.receivers import codec
from edgeagent.signals import Signal

log = logging.getLogger(__name__)


class GrpcServer:
    def __init__(self, receiver_id: str, config: Any, host: Any):
        self.receiver_id = receiver_id
        self.config = config
        self.host = host
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        # grpcio's own decompression keeps only the first gzip member: the message is decoded by codec
        options = [("grpc.max_receive_message_length", self.config.max_recv_msg_size_mib << 20),
                   ("grpc.per_message_decompression", 0),
                   ("grpc.so_reuseport", 0)]
        if self.config.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", self.config.max_concurrent_streams))
        server = grpc.aio.server(options=options + transport_options(self.config))
        handlers = []
        for signal in Signal:
            consumer = self.host.consumer(self.receiver_id, signal)
            if consumer is None:
                continue
            export = rpc_server_timer(getattr(self.host, "metrics", None), f"{signal.grpc_service}/Export",
                                      self._handler(signal, consumer))
            method: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(export)
            handlers.append(grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": method}))
        server.add_generic_rpc_handlers(handlers)
        endpoint = self.config.endpoint
        if endpoint.startswith(":"):
            endpoint = "0.0.0.0" + endpoint
        if self.config.tls is not None:
            port = server.add_secure_port(endpoint, tls.grpc_server_credentials(self.config.tls))
        else:
            port = server.add_insecure_port(endpoint)
        if port == 0:
            raise OSError(f"cannot listen on {self.config.endpoint} for OTLP/gRPC")
        await server.start()
        self._server = server
        log.info("OTLP/gRPC receiver listening", extra={"receiver": self.receiver_id, "endpoint": self.config.endpoint,
                                                        "tls": self.config.tls is not None})

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace=2.0)

    def _handler(self, signal: Signal, consumer: Any):
        include_metadata = self.config.include_metadata
        authenticator = auth.resolve(self.host, self.config.auth)
        limit = self.config.max_recv_msg_size_mib << 20

        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                if authenticator is not None and not authenticator.authenticate(
                        {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}):
                    raise UnauthenticatedError()
                with consumer.admission("grpc", len(request)) as reservation:
                    request = codec.grpc_message(request, limit,
                                                 lambda produced: reservation.grow(produced - reservation.bytes))
                    metadata = codec.metadata_of(context.invocation_metadata() or ()) if include_metadata else None
                    payload = codec.decode(signal, request, codec.PROTOBUF, metadata, _peer_address(context.peer()))
                    await consumer.consume(payload, "grpc")
            except Exception as exc:  # every failure becomes exactly one gRPC status
                code, message, trailers = grpc_status(exc, signal)
                await context.abort(code, message, trailing_metadata=trailers)
            return b""

        return export


_SERVER_PARAMETERS = {  # grpc-go's keepalive.ServerParameters -> grpc core's server arguments (ms)
    "max_connection_idle": "grpc.max_connection_idle_ms",
    "max_connection_age": "grpc.max_connection_age_ms",
    "max_connection_age_grace": "grpc.max_connection_age_grace_ms",
    "time": "grpc.keepalive_time_ms",
    "timeout": "grpc.keepalive_timeout_ms",
}


def transport_options(config: Any) -> list[tuple[str, int]]:
    """keepalive and buffer sizes as grpc core's server arguments; unset (0) keeps grpc's default,
    which for keepalive equals grpc-go's (pings after 2h idle, 20s to answer, clients may ping every 5m)."""
    options = []
    if config.read_buffer_size:  # grpc-go: bytes read from the socket at once
        options.append(("grpc.experimental.tcp_read_chunk_size", config.read_buffer_size))
    if config.write_buffer_size:  # grpc-go: bytes gathered before a write to the socket
        options.append(("grpc.http2.write_buffer_size", config.write_buffer_size))
    keepalive = config.keepalive
    if keepalive is None:
        return options
    if keepalive.server_parameters is not None:
        options += [(name, int(getattr(keepalive.server_parameters, key) * 1000))
                    for key, name in _SERVER_PARAMETERS.items() if getattr(keepalive.server_parameters, key)]
    policy = keepalive.enforcement_policy
    if policy is not None:
        if policy.min_time:  # pings closer together than this are strikes; too many close the connection
            options.append(("grpc.http2.min_ping_interval_without_data_ms", int(policy.min_time * 1000)))
        # pings without a call in flight are allowed (and this server pings idle connections too)
        options.append(("grpc.keepalive_permit_without_calls", int(policy.permit_without_stream)))
    return options


def _peer_address(peer: str | None) -> str:
    """"ipv4:127.0.0.1:5555" or "ipv6:[::1]:5555" -> the IP address, as otelcol's client.address."""
    if not peer:
        return ""
    _, _, rest = peer.partition(":")
    if rest.startswith("["):
        return rest[1:rest.find("]")]
    return rest.rpartition(":")[0] or rest


def grpc_status(exc: BaseException, signal: Signal) -> tuple[grpc.StatusCode, str, tuple]:
    """The one place where errors become gRPC status codes."""
    if isinstance(exc, BadRequestError):
        code = {401: grpc.StatusCode.UNAUTHENTICATED, 413: grpc.StatusCode.RESOURCE_EXHAUSTED}.get(
            exc.status, grpc.StatusCode.INVALID_ARGUMENT)
        return code, str(exc), ()
    if isinstance(exc, RetryableError):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, QueueFullError) else grpc.StatusCode.UNAVAILABLE
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int((exc.retry_after or 1.0) * 1e9))
        status = status_pb2.Status(code=code.value[0], message=str(exc))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return code, str(exc), (("grpc-status-details-bin", status.SerializeToString()),)
    log.error("request failed unexpectedly", exc_info=exc, extra={"signal": signal.label})
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}", ()
