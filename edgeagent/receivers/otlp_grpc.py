"""OTLP/gRPC server: the Trace, Metrics and Logs services' Export calls, served by grpc_server.

Requests arrive as raw bytes (no generated deserializer), so a request that no processor
changes is parsed once and stored as received. Messages are decoded with codec's bounded
decoders whatever grpc-encoding they use (identity, gzip, deflate, zstd, snappy: grpcio's server
refuses the last two, hence our own server). With `tls` the port serves TLS (mTLS with
`client_ca_file`); with `auth` every call must satisfy the named authenticator extension.

A call's deadline (grpc-timeout) spent on arrival is answered DEADLINE_EXCEEDED before the handler
runs, as grpc-go answers it; one that passes while the request is read or parsed cancels it
(nothing kept). Once the request goes to the consumer, the answer is the consume's outcome: OK for
a commit that ends after the deadline (otelcol resets the stream then, and its client sends again
what was kept), an error for what the waits refused at the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from edgeagent import auth, netaddr, tls
from edgeagent.errors import BadRequestError, PermanentError, QueueFullError, RetryableError, UnauthenticatedError
from edgeagent.grpc_status import StatusCode, name_of
from edgeagent.instrumentation import rpc_server_observer
from edgeagent.receivers import codec, grpc_call, grpc_server, parse_cost, refused, upstream_status
from edgeagent.signals import Signal

log = logging.getLogger(__name__)
_DEFAULT_STREAMS = 1024  # otelcol's 0 means unlimited; a bound keeps a client from opening millions
SHUTDOWN_GRACE = 2.0


class GrpcServer:
    def __init__(self, receiver_id: str, config: Any, host: Any):
        self.receiver_id = receiver_id
        self.config = config
        self.host = host
        self._server: grpc_server.GrpcServer | None = None
        self._address: netaddr.Address | None = None

    async def start(self) -> None:
        handlers: dict[str, grpc_call.Handler] = {}
        for signal in Signal:
            consumer = self.host.consumer(self.receiver_id, signal)
            if consumer is not None:
                handlers[f"/{signal.grpc_service}/Export"] = self._handler(signal, consumer)
        ssl_context = tls.server_ssl_context(self.config.tls, alpn=["h2"]) if self.config.tls is not None else None
        server = grpc_server.GrpcServer(handlers, limits(self.config), ssl_context,
                                         healthy=lambda: bool(self.host.health()["healthy"]))
        try:
            address = await netaddr.listen(self.config.transport, self.config.endpoint, 4317)
            try:
                await server.start(address.host, address.port, sock=address.sock)
            except BaseException:
                netaddr.close(address)
                raise
        except OSError as exc:
            raise OSError(f"cannot listen on {self.config.endpoint} for OTLP/gRPC: {exc}") from exc
        self._server, self._address = server, address
        log.info("OTLP/gRPC receiver listening", extra={"receiver": self.receiver_id, "endpoint": self.config.endpoint,
                                                        "transport": address.transport,
                                                        "tls": self.config.tls is not None})

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace=SHUTDOWN_GRACE)
        if self._address is not None:
            address, self._address = self._address, None
            netaddr.close(address)

    def _handler(self, signal: Signal, consumer: Any) -> grpc_call.Handler:
        include_metadata = self.config.include_metadata
        authenticator = auth.resolve(self.host, self.config.auth)
        observe = rpc_server_observer(getattr(self.host, "metrics", None), f"{signal.grpc_service}/Export")
        success = codec.success_response(codec.PROTOBUF)

        async def export(call: grpc_call.GrpcCall) -> bytes:
            started = time.perf_counter()
            status = "CANCELLED"  # unless it ends otherwise: a deadline before the consume, or a reset
            try:
                if authenticator is not None and not authenticator.authenticate(
                        {key: value for key, value in call.metadata if isinstance(value, str)}):
                    raise UnauthenticatedError()
                if (refusal := consumer.refusal("grpc")) is not None:
                    consumer.count_refused("grpc", await _refused_items(call, signal), refusal[0])
                    raise refusal[1]
                with consumer.admission("grpc") as reservation:
                    request = await call.read(lambda size: reservation.grow(size - reservation.bytes))
                    metadata = codec.metadata_of(call.metadata) if include_metadata else None
                    await parse_cost.admit(reservation, signal, request, codec.PROTOBUF)
                    payload = await parse_cost.decode(signal, request, codec.PROTOBUF, metadata, call.peer)
                    # from here the answer is the consume's outcome, late or not: a commit under way
                    # cannot be taken back, and what waits (for room, for delivery) ends at the deadline
                    payload.deadline = call.own_deadline()
                    await consumer.consume(payload, "grpc")
                status = "OK"
            except grpc_call.GrpcError as exc:
                status = name_of(exc.code)
                raise
            except Exception as exc:  # every failure becomes exactly one gRPC status
                code, message, trailers = grpc_status(exc, signal)
                status = code.name
                raise grpc_call.GrpcError(code, message, trailers) from None
            finally:
                observe(time.perf_counter() - started, status)
            return success

        return export


async def _refused_items(call: grpc_call.GrpcCall, signal: Signal) -> int:
    """The items of a call refused for memory, when its message is small enough to count (refused.py)."""
    with refused.budget(refused.COUNTED_BYTES) as allowed:
        if not allowed:
            return 0
        try:
            async with asyncio.timeout(refused.READ_SECONDS):
                return refused.items(signal, await call.read(refused.within), codec.PROTOBUF)
        except (TimeoutError, BadRequestError, grpc_call.GrpcError, ConnectionError):
            return 0


def limits(config: Any) -> grpc_call.Limits:
    """The server's bounds from the receiver's keys; keepalive keys unset (0) keep grpc-go's defaults
    (no age limit, pings after 2h of silence with 20s to answer, clients may ping every 5m), except
    max_connection_idle, 5 minutes here rather than never."""
    keepalive = config.keepalive
    parameters = keepalive.server_parameters if keepalive is not None else None
    policy = keepalive.enforcement_policy if keepalive is not None else None
    defaults = grpc_call.Limits(max_message_bytes=(config.max_recv_msg_size_mib or 4) << 20)
    return grpc_call.Limits(
        max_message_bytes=defaults.max_message_bytes,
        max_concurrent_streams=config.max_concurrent_streams or _DEFAULT_STREAMS,
        idle_timeout=(parameters and parameters.max_connection_idle) or defaults.idle_timeout,
        max_age=(parameters and parameters.max_connection_age) or 0.0,
        age_grace=(parameters and parameters.max_connection_age_grace) or 0.0,
        ping_after=max((parameters and parameters.time) or defaults.ping_after, 1.0),  # grpc-go's floor
        ping_timeout=(parameters and parameters.timeout) or defaults.ping_timeout,
        min_ping_interval=(policy and policy.min_time) or defaults.min_ping_interval,
        pings_without_calls=policy is not None and policy.permit_without_stream,
        receive_buffer=config.read_buffer_size, send_buffer=config.write_buffer_size)


def grpc_status(exc: BaseException, signal: Signal) -> tuple[StatusCode, str, tuple]:
    """The one place where errors become gRPC status codes."""
    if isinstance(exc, BadRequestError):
        code = {401: StatusCode.UNAUTHENTICATED, 413: StatusCode.RESOURCE_EXHAUSTED}.get(
            exc.status, StatusCode.INVALID_ARGUMENT)
        return code, str(exc), ()
    if isinstance(exc, PermanentError):  # the upstream refused it for good (wait_for_result)
        return StatusCode(upstream_status.grpc_code(exc)), str(exc), ()
    if isinstance(exc, RetryableError):
        code = StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, QueueFullError) else StatusCode.UNAVAILABLE
        from google.protobuf import duration_pb2  # with the first refusal: protobuf comes with requests (signals.py)
        from google.rpc import error_details_pb2, status_pb2

        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int((exc.retry_after or 1.0) * 1e9))
        status = status_pb2.Status(code=code, message=str(exc))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return code, str(exc), (("grpc-status-details-bin", status.SerializeToString()),)
    log.error("request failed unexpectedly", exc_info=exc, extra={"signal": signal.label})
    return StatusCode.INTERNAL, f"internal error: {type(exc).__name__}", ()
