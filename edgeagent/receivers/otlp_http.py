"""OTLP/HTTP server (edgeagent.http1): POST /v1/traces, /v1/metrics, /v1/logs, and GET /health.

GET /health answers as the health_check extension's `/health` (200 when the agent is healthy, 503
when not), unless a signal is served at that path: load balancers check the port they balance
(the deployment guide's HAProxy `option httpchk GET /health` on 4318), where otelcol answers 404
and every collector would be marked down. A signal's path ending in `/` serves its subtree, as
in Go's ServeMux, so a signal at `/` takes /health as otelcol's does (and keeps what is POSTed there).

Bodies are decompressed here (codec.Decompressor), as they arrive, so the size limit applies
to the decompressed size for every encoding otelcol accepts and a decompression bomb stops at
the limit. A request reserves memory-limiter budget for the bytes it has actually sent, as they
arrive, never for what its Content-Length declares; otelcol's `read_header_timeout` and
`read_timeout` end slow senders, and at most MAX_UNREAD_BODIES bodies are read at once. With
`tls` the port serves HTTPS (mTLS with `client_ca_file`); with `auth` a request without valid
credentials gets 401 before its body is read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from edgeagent import auth, confighttp, netaddr
from edgeagent.errors import BadRequestError, PermanentError, RetryableError, UnauthenticatedError
from edgeagent.http1.server import Request, Response, Server
from edgeagent.http1.wire import ProtocolError
from edgeagent.instrumentation import http_server_timer
from edgeagent.processors.memory_limiter import Reservation as MemoryReservation
from edgeagent.receivers import codec, http1_probe, parse_cost, refused, upstream_status
from edgeagent.runtime import suspensions
from edgeagent.signals import Signal

log = logging.getLogger(__name__)


class Reservation(parse_cost.Reservation, Protocol):
    """What a body being read asks of the memory limiters' budget (processors/memory_limiter.py)."""

    bytes: int

    def grow(self, body_bytes: int) -> None: ...
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 12, 408: 4, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
MAX_UNREAD_BODIES = 1024  # bodies being read at once; more get 503 rather than queue up sockets and buffers
DISCONNECT_EPISODE = 60.0  # disconnects closer together than this are one episode: one log line
HEALTH_PATH = http1_probe.PATH.decode()
SHUTDOWN_GRACE = 2.0  # seconds requests in progress get to be answered at a stop (the gRPC receiver's too)


class HttpServer:
    def __init__(self, receiver_id: str, config: Any, host: Any):
        self.receiver_id = receiver_id
        self.config = config
        self.host = host
        self._server: Server | None = None
        self._address: netaddr.Address | None = None
        self._reading = 0
        self._disconnects = Disconnects(host, receiver_id, "http")
        self._encodings = config.content_encodings()

    async def start(self) -> None:
        address = await netaddr.listen(self.config.transport, self.config.endpoint, 4318)
        try:
            await self._serve(address)
        except BaseException:
            netaddr.close(address)
            raise
        self._address = address
        log.info("OTLP/HTTP receiver listening", extra={"receiver": self.receiver_id, "endpoint": self.config.endpoint,
                                                        "transport": address.transport,
                                                        "tls": self.config.tls is not None})

    async def _serve(self, address: netaddr.Address) -> None:
        scheme = "https" if self.config.tls is not None else "http"
        timer = http_server_timer(getattr(self.host, "metrics", None), address.host or address.path or "",
                                  address.port, scheme)
        hooks = [confighttp.response_headers(self.config.response_headers)] if self.config.response_headers else []
        server = Server(middlewares=[timer, *confighttp.server_middlewares(self.config)], on_response=hooks,
                        wait_for_request=confighttp.wait_for_request(self.config),
                        write_timeout=self.config.write_timeout)
        paths = {
            Signal.TRACES: self.config.traces_url_path,
            Signal.METRICS: self.config.metrics_url_path,
            Signal.LOGS: self.config.logs_url_path,
        }
        served: dict[str, str] = {}
        for signal, path in paths.items():
            consumer = self.host.consumer(self.receiver_id, signal)
            if consumer is None:
                continue
            key = f"{signal.label}_url_path"
            if path in served:  # otelcol's mux refuses it too; else the last signal would take the other's data
                raise ValueError(f"receivers::{self.receiver_id}::protocols::http: {served[path]} and {key} are "
                                 f"both {path!r}; give each signal a path of its own")
            served[path] = key
            server.post(path, self._handler(signal, consumer))
        if server.router.match(HEALTH_PATH) is None:  # a signal's path, or its subtree (`/`), takes it otherwise
            server.get(HEALTH_PATH, self._health)
        await confighttp.listen(server, address, self.config)
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(SHUTDOWN_GRACE)
        if self._address is not None:
            address, self._address = self._address, None
            netaddr.close(address)

    async def _health(self, request: Request) -> Response:
        healthy = bool(self.host.health()["healthy"])
        return Response(200 if healthy else 503, text=http1_probe.health_body(healthy), content_type="application/json")

    def _handler(self, signal: Signal, consumer: Any):
        include_metadata = self.config.include_metadata
        success = {content_type: codec.success_response(content_type)
                   for content_type in (codec.PROTOBUF, codec.JSON)}
        authenticator = auth.resolve(self.host, self.config.auth)
        request_params = self.config.auth.request_params if self.config.auth is not None else []

        async def handle(request: Request) -> Response:
            answer_by = _answer_by(self.config.write_timeout)
            content_type = request.content_type
            if authenticator is not None and not authenticator.authenticate(
                    confighttp.auth_sources(request, request_params)):
                return error_response(UnauthenticatedError(), content_type, signal)
            if content_type not in (codec.PROTOBUF, codec.JSON):
                return Response(415, text=f"unsupported content type {content_type!r}; "
                                    f"use {codec.PROTOBUF} or {codec.JSON}\n")
            refusal = consumer.refusal("http")
            if refusal is not None:
                consumer.count_refused("http", await self._refused_items(request, signal), refusal[0])
                return error_response(refusal[1], content_type, signal)
            try:
                with consumer.admission("http") as reservation:
                    body = await self._read_body(request, reservation)
                    metadata = codec.metadata_of(request.headers.items()) if include_metadata else None
                    await parse_cost.admit(reservation, signal, body, content_type)
                    payload = await parse_cost.decode(signal, body, content_type, metadata, request.remote)
                    payload.deadline = answer_by
                    del body
                    await consumer.consume(payload, "http")
            except ConnectionError as exc:  # gone, or only done writing (FIN): it may still read why
                self._disconnects.count()
                # the connection's reader keeps this error: its traceback's frames (and the part of the
                # body they hold, megabytes) would stay in that cycle until the cycle collector ran
                exc.__traceback__ = None
                return error_response(BadRequestError(f"the request body ended early: {exc}"), content_type, signal)
            except Exception as exc:  # every failure becomes exactly one HTTP answer
                return error_response(exc, content_type, signal)
            return Response(body=success[content_type], content_type=content_type)

        return handle

    async def _refused_items(self, request: Request, signal: Signal) -> int:
        """The items of a request refused for memory, when its body is small enough to count (refused.py)."""
        length = request.content_length
        if length is None or length > refused.COUNTED_BYTES or self._reading >= MAX_UNREAD_BODIES:
            return 0
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if self._encodings is not None and not self._encodings:
            encoding = "identity"
        elif self._encodings is not None and encoding not in self._encodings:
            return 0
        wait = min(self.config.read_timeout or refused.READ_SECONDS, refused.READ_SECONDS)
        with refused.budget(length if encoding in ("", "identity") else refused.COUNTED_BYTES) as allowed:
            if not allowed:
                return 0
            self._reading += 1
            try:
                async with asyncio.timeout(wait):
                    body = await _read_body(request, encoding, refused.COUNTED_BYTES,
                                            MemoryReservation([], _uncounted))
            except (TimeoutError, BadRequestError, ConnectionError):
                return 0
            finally:
                self._reading -= 1
            return refused.items(signal, body, request.content_type)

    async def _read_body(self, request: Request, reservation: Reservation) -> bytes:
        """The decompressed body, read within read_timeout and reserved as it arrives."""
        if request.version < (1, 1) and "Content-Length" not in request.headers and \
                "Transfer-Encoding" not in request.headers:
            raise BadRequestError("an HTTP/1.0 request body needs a Content-Length", status=411)
        if self._reading >= MAX_UNREAD_BODIES:
            raise RetryableError(f"{MAX_UNREAD_BODIES} request bodies are being read already", retry_after=1.0)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if self._encodings is not None and not self._encodings:
            encoding = "identity"  # compression_algorithms: [] -- otelcol decodes nothing, reads bodies as they came
        elif self._encodings is not None and encoding not in self._encodings:
            raise BadRequestError(f"Content-Encoding {encoding!r} is not accepted here (compression_algorithms: "
                                  f"{sorted(self.config.compression_algorithms)})")
        limit = self.config.max_request_body_size
        self._reading += 1
        try:
            if not self.config.read_timeout:  # otelcol's default: no limit on the whole request
                return await _read_body(request, encoding, limit, reservation)
            # a freeze of the agent is no time the client was slow: what it sent meanwhile is read
            async with suspensions.timeout(self.config.read_timeout):
                return await _read_body(request, encoding, limit, reservation)
        except TimeoutError:
            raise BadRequestError(f"the request body was not received within read_timeout "
                                  f"({self.config.read_timeout:g}s)", status=408) from None
        finally:
            self._reading -= 1


async def _read_body(request: Request, encoding: str, limit: int, reservation: Reservation) -> bytes:
    received = 0

    def reserve(produced: int) -> None:  # the larger of what arrived and what it decoded to so far
        reservation.grow(max(received, produced) - reservation.bytes)

    decompressor = codec.Decompressor(encoding, limit, reserve)
    length = request.content_length
    if length is not None and length > limit and decompressor.encoding in ("", "identity", "none"):
        raise BadRequestError(f"request body of {length} bytes exceeds the limit of {limit} bytes", status=413)
    try:
        async for chunk in request.iter_chunks():  # as received: no re-slicing into fixed sizes
            received += len(chunk)
            if received > limit:
                raise BadRequestError(f"request body exceeds the limit of {limit} bytes", status=413)
            decompressor.feed(chunk)
            reserve(decompressor.size)  # compressed input that has not decoded to anything yet
    except ProtocolError as exc:  # a chunked framing broken: answered, then the server closes the connection
        raise BadRequestError(str(exc), status=exc.status) from None
    return decompressor.finish()


def _uncounted(error: RetryableError) -> None:
    """A body read only to count its items takes nothing from the memory limiters' budget."""


def _answer_by(write_timeout: float) -> float | None:
    """When a request must have its answer (loop time): shortly before write_timeout closes the
    connection, so that a wait (wait_for_result, block_on_overflow) still ends in an answer."""
    if not write_timeout:
        return None
    return asyncio.get_running_loop().time() + write_timeout - min(1.0, write_timeout / 10)


class Disconnects:
    """Clients that go away mid-request: counted each time, logged once per episode."""

    def __init__(self, host: Any, receiver_id: str, transport: str):
        self._host = host
        self._labels = (receiver_id, transport)
        self._last = -DISCONNECT_EPISODE
        self._in_episode = 0

    def count(self) -> None:
        self._host.counter_inc("edgeagent_receiver_client_disconnects", 1, *self._labels)
        now = time.monotonic()
        if now - self._last >= DISCONNECT_EPISODE:
            log.warning("clients disconnect before their requests complete",
                        extra={"receiver": self._labels[0], "transport": self._labels[1],
                               "previous_episode": self._in_episode})
            self._in_episode = 0
        self._in_episode += 1
        self._last = now


def error_response(exc: BaseException, content_type: str, signal: Signal) -> Response:
    """The one place where errors become HTTP answers."""
    headers = {}
    if isinstance(exc, BadRequestError):
        status, message = exc.status, str(exc)
    elif isinstance(exc, PermanentError):  # the upstream refused it for good (wait_for_result)
        status, message = upstream_status.http_status(exc), str(exc)
    elif isinstance(exc, RetryableError):
        status, message = 503, str(exc)
        headers["Retry-After"] = str(max(1, round(exc.retry_after or 1)))
    else:
        log.error("request failed unexpectedly", exc_info=exc, extra={"signal": signal.label})
        status, message = 500, f"internal error: {type(exc).__name__}"
    if status in (408, 411):
        headers["Connection"] = "close"  # what is left of the request on the socket is no next request
    if status == 415:  # as otelcol's, in text: the client's content type is none we answer in
        return Response(status, text=message + "\n", headers=headers)
    if content_type != codec.PROTOBUF:  # a 401 comes before the type is checked: otelcol answers it in JSON
        content_type = codec.JSON
    from google.rpc import status_pb2  # with the first refusal: protobuf comes with requests (signals.py)

    body = codec.encode_response(status_pb2.Status(code=_GRPC_CODE.get(status, 2), message=message), content_type)
    return Response(status, body=body, content_type=content_type, headers=headers)
