"""otelcol 0.165's `periodic` metric reader (go.opentelemetry.io/contrib/otelconf v0.3.0), as
edgeagent honours it: every `interval` the agent's own metrics are pushed to an `otlp` upstream
(or written to stdout by `console`).

What the keys mean there, and so here:

* `interval` and `timeout` are milliseconds (60000 and 30000 by default; 0 or less: the
  default). `timeout` bounds one whole push; the exporter's own `timeout` (10000) each request.
* `endpoint` without a scheme gets `https://`, or `http://` with `insecure: true`; then the
  scheme decides: `http://` is plaintext, `https://` TLS (with `certificate` as the CA, else the
  system roots, and `client_certificate`/`client_key` for mTLS). `insecure` does nothing more.
* `http/protobuf` posts to the endpoint's path when it has one, else to `/v1/metrics`
  (`https://host:4318` posts to `https://host:4318/v1/metrics`); `grpc` uses its host and port.
* `headers` ({name, value} pairs) win over `headers_list` (`k=v,k2=v2`, values percent-decoded).
* `compression`: `gzip` or `none` (the default).
* `temporality_preference`: `cumulative` (the default), `delta` (counters and histograms, the
  observed counters too) or `lowmemory` (counters and histograms only).

otelcol accepts three things it does nothing with, and so does edgeagent, with a warning that
names the key: `default_histogram_aggregation: base2_exponential_bucket_histogram` (histograms
keep explicit buckets), `producers` (no bridge adds metrics) and `console` settings.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_INTERVAL_MS = 60000
DEFAULT_TIMEOUT_MS = 30000
DEFAULT_EXPORT_TIMEOUT_MS = 10000
_DEFAULT_ENDPOINTS = {"http/protobuf": "https://localhost:4318", "grpc": "https://localhost:4317"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


def _milliseconds(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        raise ValueError(f"{value!r}: milliseconds as a whole number (10000 for 10 s), as otelcol reads this key; "
                         f"a duration such as 10s is refused there too")
    return value


class HeaderPair(_Strict):
    name: str
    value: str | None = None  # null: not sent, as otelconf skips it


class OtlpPush(_Strict):
    protocol: Literal["http/protobuf", "grpc"]
    endpoint: str | None = None
    headers: list[HeaderPair] = Field(default_factory=list)
    headers_list: str | None = None
    compression: Literal["gzip", "none"] = "none"
    timeout: int = DEFAULT_EXPORT_TIMEOUT_MS
    insecure: bool = False
    certificate: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    temporality_preference: Literal["cumulative", "delta", "lowmemory"] = "cumulative"
    default_histogram_aggregation: Literal["explicit_bucket_histogram", "base2_exponential_bucket_histogram"] = \
        "explicit_bucket_histogram"

    _timeout_ms = field_validator("timeout", mode="before")(lambda cls, value: _milliseconds(value))

    @field_validator("headers_list")
    @classmethod
    def _headers_list(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_headers_list(value)
        return value

    @field_validator("headers")
    @classmethod
    def _named(cls, value: list[HeaderPair]) -> list[HeaderPair]:
        for pair in value:
            if pair.value is not None and not pair.name:  # otelconf's words
                raise ValueError("invalid header: empty name")
            if pair.value is not None and any(c < " " and c != "\t" or c == "\x7f" for c in pair.value):
                raise ValueError(f"the value of {pair.name!r} holds a control character such as a newline; "
                                 f"remove it")
        return value

    @model_validator(mode="after")
    def _check(self) -> OtlpPush:
        url = urlsplit(self.url())
        if not url.hostname:
            raise ValueError(f"endpoint {self.endpoint!r}: expected a URL such as https://upstream:4318 or "
                             f"host:port")
        _ = url.port  # a readable error for a bad port
        has_tls_files = any((self.certificate, self.client_certificate, self.client_key))
        if has_tls_files and url.scheme == "http":
            raise ValueError("certificate, client_certificate and client_key need TLS, and the endpoint is "
                             "plaintext (http://, or no scheme with insecure: true); use https:// or remove them")
        if bool(self.client_certificate) != bool(self.client_key):
            raise ValueError("client_certificate and client_key go together: set both or neither")
        return self

    def url(self) -> str:
        """The endpoint as otelcol normalises it: with a scheme, https:// unless insecure."""
        endpoint = self.endpoint or _DEFAULT_ENDPOINTS[self.protocol]
        if endpoint.startswith(("http://", "https://")):
            return endpoint
        return ("http://" if self.insecure else "https://") + endpoint

    def metrics_url(self) -> str:
        """Where http/protobuf posts: the endpoint's own path, else /v1/metrics."""
        url = urlsplit(self.url())
        return url._replace(path=url.path or "/v1/metrics").geturl()

    def header_map(self) -> dict[str, str]:
        headers = _parse_headers_list(self.headers_list) if self.headers_list else {}
        headers.update({pair.name: pair.value for pair in self.headers if pair.value is not None})
        return headers

    def export_timeout(self) -> float:
        """Seconds one request may take (otlp's 10 s for 0 or less)."""
        return (self.timeout if self.timeout > 0 else DEFAULT_EXPORT_TIMEOUT_MS) / 1000

    def config_warnings(self) -> list[str]:
        warnings = []
        if self.insecure and (self.endpoint or "").startswith("https://"):
            warnings.append("insecure has no effect: the endpoint's https:// scheme asks for TLS (as in otelcol); "
                            "remove insecure, or write http:// for plaintext")
        if self.default_histogram_aggregation != "explicit_bucket_histogram":
            warnings.append("default_histogram_aggregation has no effect: the agent's histograms keep explicit "
                            "buckets, as otelcol 0.165's do whatever this says; remove it")
        return warnings


def _parse_headers_list(text: str) -> dict[str, str]:
    """`k=v,k2=v2` as W3C baggage (otelconf reads it so): values percent-decoded, properties after ; dropped."""
    headers = {}
    for member in filter(None, (part.strip() for part in text.split(","))):
        name, equals, value = member.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"invalid headers list: {member!r} is not name=value")
        headers[name.strip()] = unquote(value.split(";", 1)[0].strip())
    return headers


class PushExporter(_Strict):
    otlp: OtlpPush | None = None
    console: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _console_null(cls, data: Any) -> Any:
        """`console:` written without a value is the console exporter too."""
        if isinstance(data, dict) and "console" in data and data["console"] is None:
            return {**data, "console": {}}
        return data

    @model_validator(mode="after")
    def _one(self) -> PushExporter:
        if (self.otlp is None) == (self.console is None):
            raise ValueError("give exactly one exporter: otlp (protocol, endpoint) or console")
        return self

    def config_warnings(self) -> list[str]:
        if self.otlp is not None:
            return [f"otlp::{warning}" for warning in self.otlp.config_warnings()]
        if self.console:
            return [f"console::{', '.join(sorted(self.console))}: has no effect (console takes no settings, and "
                    f"otelcol ignores them too); write console: {{}}"]
        return []


class Periodic(_Strict):
    exporter: PushExporter
    interval: int = DEFAULT_INTERVAL_MS
    timeout: int = DEFAULT_TIMEOUT_MS

    _milliseconds = field_validator("interval", "timeout", mode="before")(lambda cls, value: _milliseconds(value))

    def interval_seconds(self) -> float:
        return (self.interval if self.interval > 0 else DEFAULT_INTERVAL_MS) / 1000

    def timeout_seconds(self) -> float:
        return (self.timeout if self.timeout > 0 else DEFAULT_TIMEOUT_MS) / 1000

