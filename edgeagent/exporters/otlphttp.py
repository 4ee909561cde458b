"""The `otlphttp` exporter: POST serialized OTLP requests to `<endpoint>/v1/<signal>`.

Redirects (as otelcol's confighttp client, which keeps method and body only for 307/308):
a 307 or 308 is followed with the same POST and body, at most MAX_REDIRECTS hops; the credentials
of the endpoint URL stay with its host, `headers` and the auth extension's go with every hop. A
301, 302 or 303 would turn the POST into a GET: the final 200 would be a login page and the data
lost. They are not followed; the upstream is treated as unreachable (retryable, data stays queued)
and the Location is logged once per episode and shown in health until data is accepted again.

Buffers (otelcol's confighttp client keys; 0 or less keeps the default, as there):
`read_buffer_size` is the bytes of an answer buffered before reading the connection pauses (Go:
the connection's read buffer, 4 KiB by default; edgeagent's 64 KiB, at least 8 KiB: a line of the
head of an answer must fit in it; the head is read up to 64 KiB whatever the buffer);
`write_buffer_size` is the connection socket's send buffer, SO_SNDBUF (Go: the buffer its HTTP
writer fills before a write to the socket; edgeagent's client keeps none of its own, so the
kernel's is the one to size). `profiles_endpoint` is accepted as otelcol
accepts it: only a profiles pipeline would use it, and edgeagent carries no profiles signal (a
`profiles` pipeline is refused). An answer is read as otelcol's exporter reads it: at most 64 KiB
of its body, decompressed. A refusal saying the request is over a size limit is split as a 413 is,
whatever its status: a 400 saying "http: request body too large" (Go's MaxBytesError, with which
otelcol's receiver refuses a body over its max_request_body_size), a gateway's 429 with its
backend's "received message larger than max" (retrying the same bytes would never end).

`encoding: json` sends each request in OTLP/JSON (`application/json`, hex ids, integer enums) as
otelcol's exporter does; the queue keeps protobuf, converted at send, and a request larger than
JSON_PART_BYTES of protobuf is sent in parts of about that size (the export chain cuts it). A partial success is read
from a protobuf or a JSON answer alike; a 2xx whose answer does not decode is refused for good
(dead-lettered, not sent again: the upstream may hold the data), as otelcol refuses it.
An answer whose head came but whose body broke off, did not decode or did not end within the
`timeout` (which, as Go's http.Client.Timeout, bounds the request with its redirects) is judged by
its status: a 2xx likewise (never sent again: an upstream that always answers so would otherwise
get the same request for ever), any other as if its body were empty. A 407 (from a proxy that
forwards http://) or a 511 (a captive portal) never comes from the upstream: the data stays queued,
as behind a CONNECT tunnel the proxy refuses, where otelcol would drop it.

Credentials in an endpoint URL (`https://user:password@host`) are sent as HTTP Basic auth,
unless `headers` or `auth` also set an Authorization: that is a config error. Nothing the
exporter logs, raises or shows carries a header value, a password or a query value
(edgeagent.masking).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from google.protobuf.message import DecodeError
from pydantic import ValidationInfo, field_validator, model_validator

from edgeagent import __version__
from edgeagent.auth import AuthConfig, Authenticator
from edgeagent.auth import resolve as resolve_authenticator
from edgeagent.component import Factory
from edgeagent.configretry import parse_retry_after
from edgeagent.errors import PermanentError, RetryableError, ThrottledError
from edgeagent.exporters import httpclient
from edgeagent.exporters.bandwidth import Encode, Pacer
from edgeagent.exporters.chain import SendResult, refused_for_size, rejected, undecodable_answer
from edgeagent.exporters.config import ExporterConfig
from edgeagent.exporters.encoding import compress
from edgeagent.exporters.httpclient import HttpClientConfig, check_compression_level
from edgeagent.http1.client import BrokenAnswerError, ClientError, ClientSettings, ConnectError, HttpClient
from edgeagent.http1.dial import UnsupportedProxyError, read_proxy, split_proxy, url_host
from edgeagent.instrumentation import http_client_timer
from edgeagent.masking import mask, shown_url, url_secrets
from edgeagent.runtime.reload import Reloading
from edgeagent.signals import Signal
from edgeagent.tls import TlsClientConfig, reloading_client_context
from otel.otlpjson import parse_json, to_otlp_json

log = logging.getLogger(__name__)
_RETRYABLE_STATUS = (429, 502, 503, 504)
_THROTTLE_STATUS = (429, 503)
# a proxy or captive portal answering for an unreachable upstream: the link is down, not the server
_LINK_STATUS = (502, 504)
_FOLLOWED = (307, 308)  # redirects that keep the method and the body
# answers of the network, never of the upstream: the data stays queued until the network lets it through
_NETWORK_REFUSALS = {407: "a proxy wants credentials (check proxy_url or HTTP_PROXY)",
                     511: "the network wants a login first (a captive portal)"}
MAX_REDIRECTS = 10  # as Go's http.Client, which otelcol uses
_CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")  # never shown
_URL_FIELDS = ("endpoint", "traces_endpoint", "metrics_endpoint", "logs_endpoint", "profiles_endpoint")
_DEFAULT_READ_BUFFER = 2**16
_CONTENT_TYPES = {"proto": "application/x-protobuf", "json": "application/json"}
# OTLP/JSON: a larger request is sent in parts of about this many protobuf bytes (the chain cuts
# it): its message, its JSON tree and its text took several times a 60 MiB record in memory. In
# JSON, hex ids and field names make them about 2 to 4 times as large: under the 20 MiB that
# otelcol's receivers take by default (max_request_body_size).
JSON_PART_BYTES = 4 << 20


class OtlpHttpConfig(ExporterConfig, HttpClientConfig):
    auth: AuthConfig | None = None  # before the endpoints, so that their validation sees it
    endpoint: str | None = None
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    logs_endpoint: str | None = None
    profiles_endpoint: str | None = None  # a profiles pipeline's; edgeagent has none
    compression: Literal["gzip", "zstd", "deflate", "zlib", "snappy", "x-snappy-framed", "lz4", "none", ""] = "gzip"
    tls: TlsClientConfig | None = None
    read_buffer_size: int = 0  # bytes of an answer buffered; 0 or less: 64 KiB
    encoding: Literal["proto", "json"] = "proto"  # the body: OTLP/protobuf or OTLP/JSON
    write_buffer_size: int = 0  # the socket's SO_SNDBUF; 0 or less: the system's

    @field_validator(*_URL_FIELDS)
    @classmethod
    def _url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if not url:
            return url
        scheme, separator, rest = url.partition("://")
        if scheme.lower() not in ("http", "https") or not separator:
            raise ValueError(f"{shown_url(url)!r} must start with http:// or https://")
        url = f"{scheme.lower()}://{rest}"  # as Go's url.Parse reads it
        if urlsplit(url).password is None and urlsplit(url).username is None:
            return url
        headers = info.data.get("headers") or {}
        if any(name.lower() == "authorization" for name in headers):
            raise ValueError("carries credentials (user:password@) and headers sets Authorization too; keep one: "
                             "remove the credentials from the URL or the Authorization header")
        if info.data.get("auth") is not None:
            raise ValueError("carries credentials (user:password@) and auth::authenticator sets Authorization too; "
                             "keep one: remove the credentials from the URL or auth")
        return url

    @model_validator(mode="after")
    def _check(self) -> OtlpHttpConfig:
        # An endpoint set to "" on purpose (e.g. ${env:EDGEAGENT_UPSTREAM:-}) means "no upstream yet":
        # the agent buffers everything durably and says so. A missing endpoint is a mistake. A signal
        # endpoint alone serves its signal's pipelines (unfit_for), as in otelcol.
        if self.endpoint is None and not any(getattr(self, field) for field in _URL_FIELDS):
            raise ValueError("endpoint is required: set endpoint (e.g. https://collector:4318) "
                             "or the endpoint of each signal sent (traces_endpoint, metrics_endpoint, logs_endpoint)")
        if self.compression not in ("none", ""):
            check_compression_level(self.compression, self.compression_params.level)
        elif self.compression_params.level:
            raise ValueError("compression_params::level has no effect without compression; remove it")
        return self

    def client_urls(self) -> list[str]:
        return [url for url in (self.endpoint, self.traces_endpoint, self.metrics_endpoint, self.logs_endpoint) if url]

    def unfit_for(self, signal: str) -> tuple[str, str] | None:
        if self.endpoint is None and not getattr(self, f"{signal}_endpoint"):
            return f"{signal}_endpoint", f"either endpoint or {signal}_endpoint must be specified, as in otelcol"
        return None

    def config_warnings(self) -> list[str]:
        warnings = self.client_warnings() + super().config_warnings()
        if self.profiles_endpoint:
            warnings.append("profiles_endpoint is not used: only a profiles pipeline sends there (as in otelcol), "
                            "and edgeagent carries no profiles signal")
        urls = [url for url in (self.endpoint, self.traces_endpoint, self.metrics_endpoint, self.logs_endpoint) if url]
        if not urls:
            warnings.append("endpoint is empty: no upstream is configured, data is buffered until one is set")
        elif self.tls is not None and self.tls.insecure:
            rest = ("without ca_file or ca_pem the rest of the tls block is not used either, as in otelcol"
                    if self.tls.dropped() else "the rest of the tls block is used, as in otelcol")
            warnings.append("tls::insecure has no effect on otlphttp: the endpoint's scheme decides (http:// is "
                            f"plaintext, https:// is TLS); {rest}")
        elif self.tls is not None and not any(url.startswith("https://") for url in [*urls, self.proxy_url]):
            warnings.append("tls has no effect: every endpoint is http://; use https:// for TLS")
        return warnings

    def url(self, signal: Signal) -> str | None:
        specific: str | None = getattr(self, f"{signal.label}_endpoint")
        if specific:
            return specific
        if not self.endpoint:
            return None
        return self.endpoint.rstrip("/") + f"/v1/{signal.label}"


@dataclass(frozen=True)
class _Answer:
    """What the upstream answered one request, as the exporter reads it."""

    status: int
    content: bytes
    content_type: str  # the media type, lower case
    content_type_header: str  # the Content-Type as sent
    retry_after: float | None
    location: str | None
    broken: str = ""  # why the body did not come whole (the head did); "" when it did


class OtlpHttpExporter:
    """Sends one request; raises RetryableError or PermanentError as the upstream answers."""

    def __init__(self, component_id: str, config: OtlpHttpConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self.configured = bool(
            config.endpoint or config.traces_endpoint or config.metrics_endpoint or config.logs_endpoint
        )
        self.host = host
        self._client: HttpClient | None = None
        self._auth: Authenticator | None = None
        self._tls: Reloading[ssl.SSLContext | None] | None = None  # read in start()
        self._system_roots: ssl.SSLContext | None = None  # built at the first HTTPS request without a tls block
        self._headers = {"Content-Type": _CONTENT_TYPES[config.encoding], "User-Agent": f"edgeagent/{__version__}",
                         **config.headers}
        self._encoding = config.compression if config.compression not in ("none", "") else None
        if self._encoding is not None:
            self._headers["Content-Encoding"] = self._encoding
        # signal -> (URL without credentials, the Basic Authorization they make or None)
        self._targets = {signal: _split_credentials(url) for signal in Signal if (url := config.url(signal))}
        self._url_secrets = [secret for signal in Signal for secret in url_secrets(config.url(signal) or "")] \
            + url_secrets(config.proxy_url)
        self._bandwidth: Pacer[bytes] = Pacer(config.rate_limit)
        self._redirected_to: str | None = None  # the Location of the redirect episode going on
        self._proxies = httpclient.Proxies(config.proxy_url)

    def describe(self) -> str:
        urls = [self.config.endpoint] if self.config.endpoint else filter(None, (self.config.url(s) for s in Signal))
        return ", ".join(shown_url(url) for url in urls) or "none"

    async def start(self) -> None:
        self._auth = resolve_authenticator(self.host, self.config.auth)
        if self.config.tls is not None and not self.config.tls.dropped():  # with a CA, `insecure` keeps it
            self._tls = reloading_client_context(self.config.tls)
        pool = httpclient.pool_settings(self.config, limit=max(self.config.sending_queue.num_consumers, 1) * 3)
        read_buffer = self.config.read_buffer_size if self.config.read_buffer_size > 0 else _DEFAULT_READ_BUFFER
        self._proxies = httpclient.Proxies(self.config.proxy_url)
        self._check_proxies()
        self._client = HttpClient(ClientSettings(
            pool=pool, read_buffer=read_buffer, send_buffer=max(self.config.write_buffer_size, 0),
            cookies=self.config.cookies is not None, observe=http_client_timer(getattr(self.host, "metrics", None))))

    def _check_proxies(self) -> None:
        """An environment proxy the client cannot go through is said once, here; each send then
        fails with the same error, which the chain reports (proxy_url is checked with the config)."""
        proxies = {proxy for url, _ in self._targets.values() if (proxy := self._proxies.for_url(url))}
        for proxy in sorted(proxies):
            try:
                read_proxy(proxy)
            except UnsupportedProxyError as exc:
                log.error("the proxy the environment names (HTTPS_PROXY / HTTP_PROXY) cannot be used; nothing is "
                          "sent and the data stays queued: fix the variable or set proxy_url",
                          extra={"exporter": self.id, "error": mask(str(exc), self._url_secrets)})

    def upstream_addresses(self) -> list[tuple[str, int]]:
        """host:port where requests connect: each endpoint's, or its proxy's (a redirect's target is
        not watched)."""
        return _addresses([self._proxies.for_url(url) or url for url, _ in self._targets.values()])

    def signal_addresses(self, signal: Signal) -> list[tuple[str, int]]:
        """host:port where the requests of `signal` connect: its endpoint's, or its proxy's."""
        target = self._targets.get(signal)
        return [] if target is None else _addresses([self._proxies.for_url(target[0]) or target[0]])

    async def shutdown(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _request_headers(self, basic: str | None) -> dict[str, str]:
        headers = self._headers if basic is None else {**self._headers, "Authorization": basic}
        if self._auth is None:
            return headers
        return {**headers, **self._auth.client_headers()}

    def _secrets(self, headers: dict[str, str], url: str) -> list[str]:
        """What must never appear in what we log, store or show: credentials we send and URL secrets."""
        configured = {*self.config.headers.values(), *(self._auth.client_headers().values() if self._auth else ())}
        credentials = [value for name, value in headers.items() if name.lower() in _CREDENTIAL_HEADERS]
        basic = [value.split(" ", 1)[-1] for value in credentials]
        return [*configured, *credentials, *basic, *url_secrets(url), *self._url_secrets]

    def _tls_context(self, url: str, proxy: str) -> ssl.SSLContext | None:
        """The current TLS context for an https URL or an https proxy (read again when its files
        changed; Go's Transport uses its TLS config for both); None for http through no https proxy.
        Without a tls block (or one `insecure` drops: TlsClientConfig.dropped), the system roots."""
        if urlsplit(url).scheme.lower() != "https" and not proxy.lower().startswith("https:"):
            return None
        context = self._tls.get() if self._tls is not None else None
        if context is None:
            if self._system_roots is None:
                self._system_roots = ssl.create_default_context()
            context = self._system_roots
        return context

    async def send(self, signal: Signal, body: bytes) -> SendResult:
        return await self.send_within(signal, body, self.config.timeout)

    async def send_within(self, signal: Signal, body: bytes, timeout: float | None) -> SendResult:
        """One request, its answer within `timeout` seconds (None or 0: no bound) from when the
        request is ready, redirects included (Go's http.Client.Timeout)."""
        target = self._targets.get(signal)
        if target is None or self._client is None:
            raise RetryableError(f"no endpoint configured for {signal.label}", connection=True)
        url, basic = target
        data = await self._bandwidth.wire(body, self._encoder(signal))
        headers = self._request_headers(basic)
        secrets = self._secrets(headers, url)
        deadline = _Deadline(timeout or None)
        answer, url = await self._post_following(url, data, headers, secrets, deadline)
        return self._result(signal, answer, url, secrets)

    async def pace(self, signal: Signal, body: bytes) -> None:
        """Wait until `rate_limit` lets this request on the wire (the chain awaits it before the timeout)."""
        await self._bandwidth.pace(body, self._encoder(signal))

    def request_bytes_limit(self, signal: Signal) -> int:
        """The chain's bound on a request's protobuf bytes: JSON_PART_BYTES for OTLP/JSON, none else."""
        return JSON_PART_BYTES if self.config.encoding == "json" else 0

    def _encoder(self, signal: Signal) -> Encode[bytes]:
        async def encode(body: bytes) -> bytes:
            if self.config.encoding == "json" or self._encoding is not None:
                return await asyncio.to_thread(self._body, signal, body)
            return body
        return encode

    def _body(self, signal: Signal, body: bytes) -> bytes:
        """The queued protobuf request as the wire wants it: in OTLP/JSON if so configured, compressed."""
        if self.config.encoding == "json":
            message = signal.request_class.FromString(body)
            body = json.dumps(to_otlp_json(message, integer_enums=True), separators=(",", ":")).encode()
        return body if self._encoding is None else compress(self._encoding, body, self.config.compression_params.level)

    async def _post_following(self, url: str, data: bytes, headers: dict[str, str], secrets: list[str],
                              deadline: _Deadline) -> tuple[_Answer, str]:
        """POST, following 307/308 with the same body; returns the last answer and the URL that gave it."""
        for _ in range(MAX_REDIRECTS + 1):
            answer = await self._post(url, data, headers, secrets, deadline)
            if answer.status not in _FOLLOWED or not answer.location:
                return answer, url
            target = urljoin(url, answer.location)
            if urlsplit(target).hostname != urlsplit(url).hostname:
                # the endpoint URL's credentials stay with their host, as Go's redirect drops what the first
                # request carried; `headers` and the auth extension's go with every hop, as otelcol's
                # round trippers set them on each request the transport sends
                headers = self._request_headers(None)
            url = target
        raise RetryableError(
            f"upstream redirected more than {MAX_REDIRECTS} times, last to {mask(shown_url(url), secrets)}",
            connection=True,
        )

    async def _post(self, url: str, data: bytes, headers: dict[str, str], secrets: list[str],
                    deadline: _Deadline) -> _Answer:
        client = self._client
        if client is None:
            raise RetryableError("the exporter is shut down", connection=True)
        # the name to verify, when a tls block is in force (`insecure` without a CA drops it)
        override = self.config.tls.server_name_override if self._tls is not None and self.config.tls else ""
        proxy = self._proxies.for_url(url) or ""
        try:
            response = await client.request(
                "POST", url, body=data, headers=headers.items(), timeout=deadline.left(),
                tls=self._tls_context(url, proxy), server_hostname=override, proxy=proxy)
        except TimeoutError as exc:  # a connect that hung, or an upstream that did not answer: the link checks
            raise RetryableError(f"upstream did not answer within {deadline.timeout or 0:g}s", connection=True,
                                 unanswered=None, timed_out=True) from exc
        except BrokenAnswerError as exc:  # the upstream gave its verdict: the status says what it did
            return _Answer(exc.status, b"", "", exc.headers.get("Content-Type", ""),
                           parse_retry_after(exc.headers.get("Retry-After")), exc.headers.get("Location"),
                           broken=mask(str(exc), secrets))
        except UnsupportedProxyError as exc:  # logged at start; nothing answered, yet no connect would tell more
            raise RetryableError(f"upstream unreachable: {mask(str(exc), secrets)}", connection=True,
                                 unanswered=False) from exc
        except (ClientError, OSError) as exc:
            # no connection made at all; a TLS handshake that failed was an answer
            raise RetryableError(f"upstream unreachable: {mask(str(exc), secrets)}", connection=True,
                                 unanswered=isinstance(exc, ConnectError)) from exc
        return _Answer(response.status, response.body, response.content_type,
                       response.headers.get("Content-Type", ""), parse_retry_after(response.headers.get("Retry-After")),
                       response.headers.get("Location"))

    def _result(self, signal: Signal, answer: _Answer, url: str, secrets: list[str]) -> SendResult:
        """The one place that maps an HTTP answer to what the chain must do."""
        status = answer.status
        if 200 <= status < 300:
            self._redirected_to = None
            if answer.broken:  # as a 2xx whose answer does not decode: the upstream may hold the data
                raise PermanentError(f"upstream answered {status}, then its answer broke off ({answer.broken}); "
                                     f"the data is not sent again", status=status)
            return _partial_success(signal, answer)
        if 300 <= status < 400:
            raise self._redirected(answer, url, secrets)
        message = mask(_error_message(answer.content, answer.content_type) or f"HTTP {status}", secrets)
        if status in _NETWORK_REFUSALS:
            raise RetryableError(f"the request did not reach the upstream: {status}, {_NETWORK_REFUSALS[status]}",
                                 connection=True)
        # a refusal for size, whatever its status (a gateway's 429 too): its halves may pass, the same bytes never
        too_large = status == 413 or refused_for_size(message)
        if status in _RETRYABLE_STATUS and not too_large:
            if status in _THROTTLE_STATUS and answer.retry_after is not None:
                raise ThrottledError(f"upstream answered {status}: {message}", retry_after=answer.retry_after)
            raise RetryableError(f"upstream answered {status}: {message}", retry_after=answer.retry_after,
                                 connection=status in _LINK_STATUS)
        body = mask(answer.content[:4096].decode("utf-8", "replace"), secrets).encode()
        raise PermanentError(f"upstream rejected the data with {status}: {message}", status=status, body=body,
                             too_large=too_large)

    def _redirected(self, answer: _Answer, url: str, secrets: list[str]) -> RetryableError:
        """A redirect not followed: the upstream counts as unreachable; said once per episode."""
        location = mask(shown_url(urljoin(url, answer.location)), secrets) if answer.location else "nowhere"
        if location != self._redirected_to:
            self._redirected_to = location
            log.warning("upstream answers with a redirect that would turn the POST into a GET; it is treated as "
                        "unreachable and the data stays queued: check the endpoint",
                        extra={"exporter": self.id, "status": answer.status, "location": location})
        return RetryableError(f"upstream redirects ({answer.status}) to {location}; not followed, the data stays "
                              f"queued", connection=True)


class _Deadline:
    """The time a request and its redirects have, counted from its start (None: no bound)."""

    def __init__(self, timeout: float | None):
        self.timeout = timeout
        self._end = None if timeout is None else asyncio.get_running_loop().time() + timeout

    def left(self) -> float | None:
        """Seconds left for the next hop; TimeoutError when none are."""
        if self._end is None:
            return None
        left = self._end - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError
        return left


def _addresses(urls: list[str]) -> list[tuple[str, int]]:
    """The host and port each URL connects to, each once."""
    addresses = []
    for url in urls:
        try:
            parts, port = split_proxy(url)
        except UnsupportedProxyError:  # an environment proxy that cannot be read: nothing is connected to
            continue
        if parts.hostname:
            addresses.append((url_host(parts), port or (443 if parts.scheme == "https" else 80)))
    return list(dict.fromkeys(addresses))


def _partial_success(signal: Signal, answer: _Answer) -> SendResult:
    """The rejected count of an Export*ServiceResponse in OTLP/protobuf or OTLP/JSON, as otelcol reads
    either whatever encoding it sent. An empty answer or another content type says nothing. One that
    does not decode is refused for good when otelcol would have read it (its Content-Type exactly
    one of the two: otelcol skips any other, a charset parameter too)."""
    if not answer.content:
        return SendResult()
    try:
        if answer.content_type == "application/x-protobuf":
            response = signal.response_class.FromString(answer.content)
        elif answer.content_type == "application/json":
            response = parse_json(answer.content, signal.response_class())
        else:
            return SendResult()
    except (DecodeError, ValueError, RecursionError):
        if answer.content_type_header not in _CONTENT_TYPES.values():
            return SendResult()
        raise undecodable_answer(signal, answer.content, answer.status) from None
    return rejected(signal, response)


def _split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without `user:password@`, and the Basic Authorization value they make (None without)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    user_pass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return urlunsplit(parts._replace(netloc=netloc)), "Basic " + base64.b64encode(user_pass.encode()).decode()


def _error_message(content: bytes, content_type: str) -> str:
    if not content:
        return ""
    if content_type == "application/x-protobuf":
        from google.rpc import status_pb2
        try:
            message: str = status_pb2.Status.FromString(content).message  # google.rpc has no types
            return message
        except DecodeError:
            return ""
    return content[:512].decode("utf-8", "replace").strip()


FACTORY = Factory("otlp_http", OtlpHttpConfig, OtlpHttpExporter)
