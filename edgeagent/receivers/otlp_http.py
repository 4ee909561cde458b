"""OTLP/HTTP server (aiohttp): POST /v1/traces, /v1/metrics, /v1/logs.

Bodies are decompressed by us, not by aiohttp, so the size limit applies to the
decompressed size for every encoding (gzip, deflate, zstd) and a decompression bomb
stops at the limit. With `tls` the port serves HTTPS (mTLS with `client_ca_file`); with
`auth` a request without valid credentials gets 401 before its body is read.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from google.rpc import status_pb2

from edgeagent import auth, tls
from edgeagent.config.types import split_endpoint
from edgeagent.errors import BadRequestError, DataRefusedError, QueueFullError, RetryableError, UnauthenticatedError
from edgeagent.instrumentation import http_server_timer
from edgeagent.receivers import codec
from edgeagent.signals import Signal

log = logging.getLogger(__name__)
_GRPC_CODE = {400: 3, 401: 16, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
_UNKNOWN_LENGTH = 1 << 20  # what a chunked body is assumed to cost until it is read


class HttpServer:
    def __init__(self, receiver_id: str, config: Any, host: Any):
        self.receiver_id = receiver_id
        self.config = config
        self.host = host
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        host, port = split_endpoint(self.config.endpoint, 4318)
        scheme = "https" if self.config.tls is not None else "http"
        timer = http_server_timer(getattr(self.host, "metrics", None), host, port, scheme)
        app = web.Application(client_max_size=self.config.max_request_body_size, middlewares=[timer])
        paths = {
            Signal.TRACES: self.config.traces_url_path,
            Signal.METRICS: self.config.metrics_url_path,
            Signal.LOGS: self.config.logs_url_path,
        }
        for signal, path in paths.items():
            consumer = self.host.consumer(self.receiver_id, signal)
            if consumer is not None:
                app.router.add_post(path, self._handler(signal, consumer))
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None, handle_signals=False)
        await self._runner.setup()
        ssl_context = tls.server_ssl_context(self.config.tls) if self.config.tls is not None else None
        site = web.TCPSite(self._runner, host, port, reuse_address=True, backlog=1024, ssl_context=ssl_context)
        await site.start()
        log.info("OTLP/HTTP receiver listening", extra={"receiver": self.receiver_id, "endpoint": self.config.endpoint,
                                                        "tls": ssl_context is not None})

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _handler(self, signal: Signal, consumer: Any):
        limit = self.config.max_request_body_size
        include_metadata = self.config.include_metadata
        success = {content_type: codec.encode_response(signal.response_class(), content_type)
                   for content_type in (codec.PROTOBUF, codec.JSON)}
        authenticator = auth.resolve(self.host, self.config.auth)

        async def handle(request: web.Request) -> web.StreamResponse:
            content_type = request.content_type
            if authenticator is not None and not authenticator.authenticate(request.headers):
                return error_response(UnauthenticatedError(), content_type, signal)
            if content_type not in (codec.PROTOBUF, codec.JSON):
                return web.Response(status=415, text=f"unsupported content type {content_type!r}; "
                                    f"use {codec.PROTOBUF} or {codec.JSON}\n")
            try:
                # admitted before the body is read: refusing must not cost memory
                with consumer.admission("http", min(request.content_length or _UNKNOWN_LENGTH, limit)):
                    body = await _read_body(request, limit)
                    metadata = codec.metadata_of(request.headers.items()) if include_metadata else None
                    payload = codec.decode(signal, body, content_type, metadata, request.remote or "")
                    del body
                    await consumer.consume(payload, "http")
            except Exception as exc:  # every failure becomes exactly one HTTP answer
                return error_response(exc, content_type, signal)
            return web.Response(body=success[content_type], content_type=content_type)

        return handle


async def _read_body(request: web.Request, limit: int) -> bytes:
    encoding = request.headers.get("Content-Encoding", "")
    length = request.content_length
    decompressor = codec.Decompressor(encoding, limit)
    if length is not None and length > limit and decompressor.encoding in ("", "identity"):
        raise BadRequestError(f"request body of {length} bytes exceeds the limit of {limit} bytes", status=413)
    received = 0
    async for chunk in request.content.iter_any():  # as received: no re-slicing into fixed sizes
        received += len(chunk)
        if received > limit:
            raise BadRequestError(f"request body exceeds the limit of {limit} bytes", status=413)
        decompressor.feed(chunk)
    return decompressor.finish()


def error_response(exc: BaseException, content_type: str, signal: Signal) -> web.Response:
    """The one place where errors become HTTP answers."""
    headers = {}
    if isinstance(exc, BadRequestError):
        status, message = exc.status, str(exc)
    elif isinstance(exc, (DataRefusedError, QueueFullError, RetryableError)):
        status, message = 503, str(exc)
        headers["Retry-After"] = str(max(1, int(round(exc.retry_after or 1))))
    else:
        log.error("request failed unexpectedly", exc_info=exc, extra={"signal": signal.label})
        status, message = 500, f"internal error: {type(exc).__name__}"
    if status in (401, 415):  # the client's content type may be one we cannot answer in
        return web.Response(status=status, text=message + "\n", headers=headers)
    body = codec.encode_response(status_pb2.Status(code=_GRPC_CODE.get(status, 2), message=message), content_type)
    return web.Response(status=status, body=body, content_type=content_type, headers=headers)
