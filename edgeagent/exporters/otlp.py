"""The `otlp` exporter: OTLP over gRPC, sending the queued bytes as they are.

Errors follow the OTLP specification's table: UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED,
CANCELLED, OUT_OF_RANGE and DATA_LOSS are retryable; RESOURCE_EXHAUSTED only when the server
sends RetryInfo (it then says when to come back); every other code is permanent. The
metadata we send (headers, auth) is masked in the server's details before anyone sees them.

Compression: otelcol accepts gzip, zstd and snappy for gRPC. grpcio, the gRPC library used
here, compresses with gzip (and deflate) only, so zstd and snappy are accepted, so that
configs port unchanged, and sent gzip-compressed; validate warns about it.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Any, Literal

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from pydantic import Field, field_validator, model_validator

from edgeagent import __version__
from edgeagent.auth import AuthConfig, Authenticator
from edgeagent.auth import resolve as resolve_authenticator
from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration
from edgeagent.errors import PermanentError, RetryableError, ThrottledError
from edgeagent.exporters.bandwidth import TokenBucket
from edgeagent.exporters.chain import SendResult, partial_success
from edgeagent.exporters.config import ExporterConfig
from edgeagent.exporters.redact import mask
from edgeagent.instrumentation import RpcClientTimer
from edgeagent.runtime.reload import Reloading
from edgeagent.signals import Signal
from edgeagent.tls import TlsClientConfig, check_grpc_client, client_files, grpc_channel_credentials

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS}
# codes that say the link (not the server) failed: they count towards going offline
_LINK_FAILURES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class KeepaliveConfig(ComponentConfig):
    time: Duration = 0.0
    timeout: Duration = 20.0
    permit_without_stream: bool = False


class OtlpGrpcConfig(ExporterConfig):
    endpoint: str | None = None
    timeout: Duration = 5.0
    compression: Literal["gzip", "zstd", "snappy", "none", ""] = "gzip"
    tls: TlsClientConfig = Field(default_factory=TlsClientConfig)
    auth: AuthConfig | None = None
    keepalive: KeepaliveConfig | None = None
    balancer_name: Literal["pick_first", "round_robin", ""] = ""
    authority: str = ""
    wait_for_ready: bool = False

    _check_tls = field_validator("tls")(lambda cls, value: check_grpc_client(value))

    @model_validator(mode="after")
    def _check(self) -> OtlpGrpcConfig:
        if self.endpoint is None:
            raise ValueError("endpoint is required: set endpoint (e.g. collector:4317), or \"\" to only buffer")
        return self

    def config_warnings(self) -> list[str]:
        if not self.endpoint:
            return ["endpoint is empty: no upstream is configured, data is buffered until one is set"]
        if self.compression in ("zstd", "snappy"):
            return [f"compression {self.compression}: the gRPC library compresses with gzip only, so requests are "
                    f"sent gzip-compressed; use the otlphttp exporter for {self.compression}"]
        return []

    def target(self) -> tuple[str, bool]:
        """The gRPC target and whether it is plaintext; an http:// scheme means plaintext, as in otelcol."""
        endpoint = self.endpoint or ""
        if endpoint.startswith("http://"):
            return endpoint[len("http://"):].rstrip("/"), True
        if endpoint.startswith("https://"):
            return endpoint[len("https://"):].rstrip("/"), False
        return endpoint, self.tls.insecure

    def channel_options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [("grpc.primary_user_agent", f"edgeagent/{__version__}"),
                                          ("grpc.max_send_message_length", -1)]
        if self.keepalive is not None and self.keepalive.time > 0:
            options += [("grpc.keepalive_time_ms", int(self.keepalive.time * 1000)),
                        ("grpc.keepalive_timeout_ms", int(self.keepalive.timeout * 1000)),
                        ("grpc.keepalive_permit_without_calls", int(self.keepalive.permit_without_stream))]
        if self.balancer_name:
            options.append(("grpc.lb_policy_name", self.balancer_name))
        if self.authority:
            options.append(("grpc.default_authority", self.authority))
        return options


class OtlpGrpcExporter:
    """Sends one request over a shared channel; raises RetryableError or PermanentError."""

    def __init__(self, component_id: str, config: OtlpGrpcConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self.host = host
        self.configured = bool(config.endpoint)
        self._channel: grpc.aio.Channel | None = None
        self._credentials: Reloading[tuple[grpc.ChannelCredentials | None, list[tuple[str, Any]]]] | None = None
        self._methods: dict[Signal, Any] = {}
        self._metadata = tuple((key.lower(), value) for key, value in config.headers.items())
        self._auth: Authenticator | None = None
        self._bandwidth = TokenBucket(config.rate_limit) if config.rate_limit else None

    def describe(self) -> str:
        return self.config.endpoint or "none"

    async def start(self) -> None:
        self._auth = resolve_authenticator(self.host, self.config.auth)
        if not self.configured:
            return
        target, plaintext = self.config.target()
        if not plaintext:
            tls = self.config.tls
            self._credentials = Reloading(client_files(tls), lambda: grpc_channel_credentials(tls), tls.reload_interval)
        self._open()

    def _open(self) -> None:
        target, plaintext = self.config.target()
        options = self.config.channel_options()
        address, _, port = target.rpartition(":")
        timer = [RpcClientTimer(getattr(self.host, "metrics", None), address.strip("[]"), port)]
        if plaintext:
            self._channel = grpc.aio.insecure_channel(target, options=options, interceptors=timer)
        else:
            assert self._credentials is not None, "start() reads the credentials of a TLS channel"
            credentials, tls_options = self._credentials.value
            if credentials is None:  # https:// with tls.insecure: TLS with the system roots, as otelcol
                credentials = grpc.ssl_channel_credentials()
            self._channel = grpc.aio.secure_channel(target, credentials, options=options + tls_options,
                                                    interceptors=timer)
        self._methods = {signal: self._channel.unary_unary(f"/{signal.grpc_service}/Export") for signal in Signal}

    async def _reopen_if_certificates_changed(self) -> None:
        if self._credentials is None:
            return
        current = self._credentials.value
        if self._credentials.get() is not current:
            old = self._channel
            self._open()  # calls in flight finish on the old channel
            if old is not None:
                asyncio.get_running_loop().call_later(self.config.timeout + 1, asyncio.ensure_future, old.close())

    async def shutdown(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    def _call_metadata(self) -> tuple[tuple[str, str], ...] | None:
        metadata = self._metadata
        if self._auth is not None:
            metadata += tuple((key.lower(), value) for key, value in self._auth.client_headers().items())
        return metadata or None

    async def send(self, signal: Signal, body: bytes) -> SendResult:
        if self._channel is None:
            raise RetryableError(f"no endpoint configured for {signal.label}", connection=True)
        await self._reopen_if_certificates_changed()
        gzipped = self.config.compression not in ("none", "")
        if self._bandwidth is not None:
            # gRPC compresses inside the call; charge what it will put on the wire (about)
            wire = len(await asyncio.to_thread(gzip.compress, body, 1)) if gzipped else len(body)
            await self._bandwidth.take(wire)
        try:
            response = await self._methods[signal](
                body, timeout=self.config.timeout, metadata=self._call_metadata(),
                compression=grpc.Compression.Gzip if gzipped else grpc.Compression.NoCompression,
                wait_for_ready=self.config.wait_for_ready or None)
        except grpc.aio.AioRpcError as error:
            raise classify(error, [value for _, value in self._call_metadata() or ()]) from None
        return partial_success(signal, response)


def classify(error: grpc.aio.AioRpcError, secrets: list[str]) -> Exception:
    """The one place that maps a gRPC status to what the sender must do; `secrets` are masked in the details."""
    code = error.code()
    details = mask(error.details() or "", secrets)
    message = f"upstream answered {code.name}: {details}".rstrip(": ")
    delay = _retry_delay(error.trailing_metadata())
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None:
        return ThrottledError(message, retry_after=delay)
    if code in _RETRYABLE:
        return RetryableError(message, retry_after=delay, connection=code in _LINK_FAILURES and delay is None)
    return PermanentError(f"upstream rejected the data with {code.name}: {details}", status=code.name,
                          body=details.encode())


def _retry_delay(metadata: Any) -> float | None:
    """The RetryInfo delay carried in `grpc-status-details-bin`, in seconds, if any."""
    for key, value in metadata or ():
        if key != "grpc-status-details-bin":
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay: float = info.retry_delay.seconds + info.retry_delay.nanos / 1e9  # google.rpc has no types
                return delay
    return None


FACTORY = Factory("otlp_grpc", OtlpGrpcConfig, OtlpGrpcExporter)
