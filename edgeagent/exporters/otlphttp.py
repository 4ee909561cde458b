"""The `otlphttp` exporter: POST serialized OTLP requests to `<endpoint>/v1/<signal>`."""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import ssl
from typing import Any, Literal

import aiohttp
import zstandard
from google.protobuf.message import DecodeError
from pydantic import model_validator

from edgeagent import __version__
from edgeagent.auth import AuthConfig, Authenticator, resolve as resolve_authenticator
from edgeagent.component import Factory
from edgeagent.errors import PermanentError, RetryableError, ThrottledError
from edgeagent.exporters.bandwidth import TokenBucket
from edgeagent.exporters.config import ExporterConfig
from edgeagent.exporters.retry import parse_retry_after
from edgeagent.exporters.sender import SendResult, partial_success
from edgeagent.instrumentation import http_client_timer
from edgeagent.signals import Signal
from edgeagent.runtime.reload import Reloading
from edgeagent.tls import TlsClientConfig, reloading_client_context

log = logging.getLogger(__name__)
_RETRYABLE_STATUS = (429, 502, 503, 504)
_THROTTLE_STATUS = (429, 503)
# a proxy or captive portal answering for an unreachable upstream: the link is down, not the server
_LINK_STATUS = (502, 504)
_PASSWORD = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?)([^/@:]*):[^/@]*@")  # [scheme://]user:password@


class OtlpHttpConfig(ExporterConfig):
    endpoint: str | None = None
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    logs_endpoint: str | None = None
    compression: Literal["gzip", "zstd", "none", ""] = "gzip"
    tls: TlsClientConfig | None = None
    auth: AuthConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> "OtlpHttpConfig":
        # An endpoint set to "" on purpose (e.g. ${env:EDGEAGENT_UPSTREAM:-}) means "no upstream yet":
        # the agent buffers everything durably and says so. A missing endpoint is a mistake.
        if self.endpoint is None and not all((self.traces_endpoint, self.metrics_endpoint, self.logs_endpoint)):
            raise ValueError("endpoint is required: set endpoint (e.g. https://collector:4318) "
                             "or traces_endpoint, metrics_endpoint and logs_endpoint")
        for name in ("endpoint", "traces_endpoint", "metrics_endpoint", "logs_endpoint"):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} {_shown(url)!r} must start with http:// or https://")
        return self

    def config_warnings(self) -> list[str]:
        urls = [url for url in (self.endpoint, self.traces_endpoint, self.metrics_endpoint, self.logs_endpoint) if url]
        if not urls:
            return ["endpoint is empty: no upstream is configured, data is buffered until one is set"]
        if self.tls is not None and self.tls.insecure:
            return ["tls::insecure has no effect on otlphttp: the endpoint's scheme decides (http:// is plaintext, "
                    "https:// is TLS)"]
        if self.tls is not None and not any(url.startswith("https://") for url in urls):
            return ["tls has no effect: every endpoint is http://; use https:// for TLS"]
        return []

    def url(self, signal: Signal) -> str | None:
        specific = getattr(self, f"{signal.label}_endpoint")
        if specific:
            return specific
        if not self.endpoint:
            return None
        return self.endpoint.rstrip("/") + f"/v1/{signal.label}"


class OtlpHttpExporter:
    """Sends one request; raises RetryableError or PermanentError as the upstream answers."""

    def __init__(self, component_id: str, config: OtlpHttpConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self.configured = bool(config.endpoint or config.traces_endpoint or config.metrics_endpoint or config.logs_endpoint)
        self.host = host
        self._session: aiohttp.ClientSession | None = None
        self._auth: Authenticator | None = None
        self._tls: Reloading[ssl.SSLContext | None] | None = None  # read in start()
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": f"edgeagent/{__version__}",
                         **config.headers}
        if config.compression in ("gzip", "zstd"):
            self._headers["Content-Encoding"] = config.compression
        self._bandwidth = TokenBucket(config.rate_limit) if config.rate_limit else None

    def describe(self) -> str:
        urls = [self.config.endpoint] if self.config.endpoint else filter(None, (self.config.url(s) for s in Signal))
        return ", ".join(_shown(url) for url in urls) or "none"

    async def start(self) -> None:
        self._auth = resolve_authenticator(self.host, self.config.auth)
        if self.config.tls is not None and not self.config.tls.insecure:
            self._tls = reloading_client_context(self.config.tls)
        connector = aiohttp.TCPConnector(limit=max(self.config.sending_queue.num_consumers, 1) * 3, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                              trace_configs=[http_client_timer(getattr(self.host, "metrics", None))])

    async def shutdown(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _request_headers(self) -> dict[str, str]:
        if self._auth is None:
            return self._headers
        return {**self._headers, **self._auth.client_headers()}

    def _tls_options(self) -> dict[str, Any]:
        """The current TLS context (read again when its files changed) and the name to verify."""
        if self._tls is None:
            return {}
        options: dict[str, Any] = {"ssl": self._tls.get()}
        if self.config.tls.server_name_override:
            options["server_hostname"] = self.config.tls.server_name_override
        return options

    async def _compress(self, body: bytes) -> bytes:
        if self.config.compression == "gzip":
            return await asyncio.to_thread(gzip.compress, body, 1)
        if self.config.compression == "zstd":
            return await asyncio.to_thread(zstandard.ZstdCompressor(level=3).compress, body)
        return body

    async def send(self, signal: Signal, body: bytes) -> SendResult:
        url = self.config.url(signal)
        if url is None or self._session is None:
            raise RetryableError(f"no endpoint configured for {signal.label}", connection=True)
        data = await self._compress(body)
        if self._bandwidth is not None:
            await self._bandwidth.take(len(data))
        try:
            async with self._session.post(url, data=data, headers=self._request_headers(), **self._tls_options(),
                                          timeout=aiohttp.ClientTimeout(total=self.config.timeout)) as response:
                content = await response.read()
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                content_type = response.content_type
        except asyncio.TimeoutError as exc:
            raise RetryableError(f"upstream did not answer within {self.config.timeout:g}s", connection=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableError(f"upstream unreachable: {exc}", connection=True) from exc
        if 200 <= status < 300:
            return partial_success(signal, content) if content_type == "application/x-protobuf" else SendResult()
        message = _error_message(content, content_type) or f"HTTP {status}"
        if status in _RETRYABLE_STATUS:
            if status in _THROTTLE_STATUS and retry_after is not None:
                raise ThrottledError(f"upstream answered {status}: {message}", retry_after=retry_after)
            raise RetryableError(f"upstream answered {status}: {message}", retry_after=retry_after,
                                 connection=status in _LINK_STATUS)
        raise PermanentError(f"upstream rejected the data with {status}: {message}", status=status, body=content[:4096])


def _shown(url: str) -> str:
    """A URL as status, health and errors show it: a password in it (user:password@host) is masked."""
    return _PASSWORD.sub(r"\1\2:***@", url)


def _error_message(content: bytes, content_type: str) -> str:
    if not content:
        return ""
    if content_type == "application/x-protobuf":
        from google.rpc import status_pb2
        try:
            return status_pb2.Status.FromString(content).message
        except DecodeError:
            return ""
    return content[:512].decode("utf-8", "replace").strip()


FACTORY = Factory("otlphttp", OtlpHttpConfig, OtlpHttpExporter)
