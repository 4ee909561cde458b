"""What the `kafka` exporter and receiver share: otelcol's configkafka client keys, and errors.

Keys (otelcol's spelling and defaults): `brokers` (["localhost:9092"]), `client_id`
("otel-collector"), `protocol_version`, `auth` (`sasl` with `mechanism` PLAIN, SCRAM-SHA-256 or
SCRAM-SHA-512 and `username`/`password`; the deprecated `plain_text`, which is SASL PLAIN; the
deprecated `auth::tls`, used when `tls` is not set) and `tls` (edgeagent.tls.TlsClientConfig: a
`tls` block means TLS, unless `insecure: true` makes it plaintext, as in otelcol).

Connections and metadata (otelcol's franz-go options, as aiokafka takes them):
`conn_idle_timeout` (9m) is `connections_max_idle_ms`; `metadata::refresh_interval` (10m) is
`metadata_max_age_ms`; `metadata::retry::backoff` (250ms) is `retry_backoff_ms`, the wait between
retries (aiokafka waits it each time, where franz-go doubles it up to 5 s); `metadata::full` is
accepted and does nothing, as in otelcol 0.165 (deprecated there: both clients fetch metadata for
the topics they use); `rack_id` is the consumer's `client_rack` (fetch from the closest replica;
on a producer it changes nothing, as in otelcol). `use_leader_epoch`: aiokafka sends no leader
epoch (KIP-320), which is `false`; `true` written out warns that it has no effect.
`metadata::retry::max` and `dial_timeout` are refused: aiokafka counts no request retries and has
no connect timeout of its own.

`protocol_version` is accepted so otelcol configs port unchanged, but the client negotiates the
version of every request with the broker (ApiVersions), so a warning says it has no effect.
Kerberos, AWS MSK IAM and OIDC are not supported: their keys are rejected.

`classify()` is the one place where a Kafka client error becomes what the caller must do.
"""

from __future__ import annotations

import re
import ssl
from typing import Annotated, Any, Literal

from aiokafka import errors
from pydantic import AfterValidator, Field, field_validator, model_validator

from edgeagent.component import ComponentConfig
from edgeagent.config.types import Duration
from edgeagent.errors import PermanentError, RetryableError
from edgeagent.signals import Signal
from edgeagent.tls import TlsClientConfig, client_ssl_context

_VERSION = re.compile(r"^\d+\.\d+\.\d+(\.\d+)?$")
DEFAULT_TOPICS = {Signal.TRACES: "otlp_spans", Signal.METRICS: "otlp_metrics", Signal.LOGS: "otlp_logs"}
ENCODINGS = ("otlp_proto", "otlp_json")


def _check_encoding(value: str) -> str:
    if value not in ENCODINGS:
        raise ValueError(f"encoding {value!r} is not supported (otelcol's jaeger, zipkin and raw encodings are "
                         f"not); edgeagent reads and writes {' or '.join(ENCODINGS)}")
    return value


Encoding = Annotated[str, AfterValidator(_check_encoding)]
"""An encoding of Kafka message values: otlp_proto or otlp_json."""

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot name a Kafka topic, or None. Brokers refuse such a name, and the client
    never gets an answer for it: it waits for the topic's metadata until it times out."""
    if _TOPIC_NAME.fullmatch(topic) and topic not in (".", ".."):
        return None
    shown = topic if len(topic) <= 64 else topic[:64] + "..."
    return (f"{shown!r} is not a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-'; not '.' or "
            f"'..')")


def check_topic(topic: str | None) -> str | None:
    """A configured topic: unset or empty (the default applies), or a topic name."""
    if topic and (problem := topic_problem(topic)):
        raise ValueError(problem)
    return topic


class SignalsConfig(ComponentConfig):
    """otelcol's top-level `topic` and `encoding`, deprecated for `traces::topic` etc. (the
    subclass declares those sections): they apply to every signal whose section leaves them unset."""

    topic: str | None = None
    encoding: Encoding | None = None

    def encoding_for(self, signal: Signal) -> str:
        return getattr(self, signal.label).encoding or self.encoding or "otlp_proto"


class SaslConfig(ComponentConfig):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    username: str = ""
    password: str = ""

    @model_validator(mode="after")
    def _check(self) -> SaslConfig:
        for name in ("username", "password"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required for SASL {self.mechanism}")
        return self


class PlainTextConfig(ComponentConfig):
    """Deprecated in otelcol for `sasl` with `mechanism: PLAIN`; means exactly that."""

    username: str
    password: str


class AuthenticationConfig(ComponentConfig):
    plain_text: PlainTextConfig | None = None
    sasl: SaslConfig | None = None
    tls: TlsClientConfig | None = None  # deprecated in otelcol: the client's `tls` wins when both are set

    @model_validator(mode="after")
    def _check(self) -> AuthenticationConfig:
        if self.plain_text is not None and self.sasl is not None:
            raise ValueError("set either sasl or plain_text (the deprecated form of sasl with mechanism PLAIN), "
                             "not both")
        return self

    def sasl_settings(self) -> tuple[str, str, str] | None:
        """(mechanism, username, password), or None without SASL."""
        if self.sasl is not None:
            return self.sasl.mechanism, self.sasl.username, self.sasl.password
        if self.plain_text is not None:
            return "PLAIN", self.plain_text.username, self.plain_text.password
        return None


def check_kafka_tls(tls: TlsClientConfig | None) -> TlsClientConfig | None:
    """Refuse the TLS settings the Kafka client cannot honour, rather than ignore them."""
    if tls is None:
        return None
    if tls.server_name_override:
        raise ValueError("server_name_override is not supported for Kafka: the client verifies each broker's "
                         "certificate against the host name it connects to")
    if tls.reload_interval:
        raise ValueError("reload_interval is not supported for Kafka: certificate files are read when the agent "
                         "starts (restart or reload the agent to use new ones)")
    return tls


class MetadataRetryConfig(ComponentConfig):
    backoff: Duration = Field(0.25, ge=0)  # 0 keeps the default, as otelcol


class MetadataConfig(ComponentConfig):
    full: bool = True  # a no-op in otelcol 0.165 too
    UNSET_STAYS_UNSET = frozenset({"full"})
    refresh_interval: Duration = Field(600.0, ge=0)  # 0 keeps the default, as otelcol
    retry: MetadataRetryConfig = Field(default_factory=MetadataRetryConfig)


class ClientConfig(ComponentConfig):
    brokers: list[str] = Field(default_factory=lambda: ["localhost:9092"])
    client_id: str = "otel-collector"
    protocol_version: str = ""
    auth: AuthenticationConfig = Field(default_factory=AuthenticationConfig)
    tls: TlsClientConfig | None = None
    metadata: MetadataConfig = Field(default_factory=MetadataConfig)
    rack_id: str = ""
    conn_idle_timeout: Duration = Field(540.0, gt=0)
    # KIP-320: aiokafka sends no leader epoch with its fetches, which is what false asks (brokers without
    # leader epochs, such as Azure Event Hubs); true, otelcol's default, goes without log-truncation checks
    use_leader_epoch: bool = True
    UNSET_STAYS_UNSET = frozenset({"use_leader_epoch"})

    _check_tls = field_validator("tls")(lambda cls, value: check_kafka_tls(value))

    @field_validator("brokers")
    @classmethod
    def _check_brokers(cls, brokers: list[str]) -> list[str]:
        if not brokers:
            raise ValueError("brokers must list at least one broker (host:port)")
        for broker in brokers:
            if not broker.strip() or any(ch.isspace() for ch in broker.strip()):
                raise ValueError(f"broker {broker!r} is not a host:port address")
        return [broker.strip() for broker in brokers]

    @field_validator("protocol_version")
    @classmethod
    def _check_version(cls, version: str) -> str:
        if version and not _VERSION.match(version):
            raise ValueError(f"protocol_version {version!r} is not a Kafka version such as 2.0.0")
        return version

    @model_validator(mode="after")
    def _check_auth_tls(self) -> ClientConfig:
        check_kafka_tls(self.auth.tls)
        return self

    def client_warnings(self) -> list[str]:
        warnings = []
        if self.protocol_version:
            warnings.append(f"protocol_version {self.protocol_version} has no effect: edgeagent's Kafka client "
                            f"negotiates the protocol version with the brokers")
        if self.use_leader_epoch and "use_leader_epoch" in self.model_fields_set:
            warnings.append("use_leader_epoch: true has no effect: edgeagent's Kafka client sends no leader epoch "
                            "with its fetches, so it does not detect log truncation (KIP-320)")
        if "full" in self.metadata.model_fields_set:
            warnings.append("metadata::full has no effect, as in otelcol 0.165 (deprecated there): metadata is "
                            "fetched for the topics the client uses")
        return warnings

    def client_options(self) -> dict[str, Any]:
        """aiokafka's connection keyword arguments; reads the TLS files, so call it in start()."""
        tls = self.tls if self.tls is not None else self.auth.tls
        context: ssl.SSLContext | None = client_ssl_context(tls) if tls is not None else None
        metadata = self.metadata
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.brokers), "client_id": self.client_id,
            "security_protocol": "SSL" if context is not None else "PLAINTEXT",
            "connections_max_idle_ms": int(self.conn_idle_timeout * 1000),
            "metadata_max_age_ms": int((metadata.refresh_interval or 600.0) * 1000),
            "retry_backoff_ms": int((metadata.retry.backoff or 0.25) * 1000)}
        if context is not None:
            options["ssl_context"] = context
        sasl = self.auth.sasl_settings()
        if sasl is not None:
            mechanism, username, password = sasl
            options.update(security_protocol="SASL_SSL" if context is not None else "SASL_PLAINTEXT",
                           sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
        return options


def classify(exc: BaseException, action: str) -> Exception:
    """The one place where a Kafka client error becomes a RetryableError or a PermanentError.

    Permanent: a message larger than the broker or producer allows (status 413, so the sender
    splits the batch first), an authorization failure, an invalid topic or record. Everything
    else (unreachable brokers, timeouts, leader elections, failed authentication, which a new
    password fixes) is retryable; an unreachable broker counts towards going offline."""
    name = type(exc).__name__
    message = f"{action} failed: {name}: {exc}".rstrip(": ")
    if isinstance(exc, (errors.MessageSizeTooLargeError, errors.RecordListTooLargeError)):
        return PermanentError(f"{action} failed: the message is larger than the broker or max_message_bytes "
                              f"allows ({name})", status=413)
    if isinstance(exc, (errors.TopicAuthorizationFailedError, errors.ClusterAuthorizationFailedError,
                        errors.GroupAuthorizationFailedError, errors.TransactionalIdAuthorizationFailed)):
        return PermanentError(f"{action} failed: the broker denied it ({name}); grant this client the access "
                              f"or change the topic", status=name)
    if isinstance(exc, (errors.InvalidTopicError, errors.CorruptRecordException, errors.InvalidRequiredAcksError,
                        errors.UnsupportedForMessageFormatError, errors.PolicyViolationError)):
        return PermanentError(f"{action} failed: the broker rejected the data ({name})", status=name)
    link_down = isinstance(exc, (errors.KafkaConnectionError, errors.NoBrokersAvailable, errors.KafkaTimeoutError,
                                 errors.RequestTimedOutError, errors.NodeNotReadyError, ConnectionError,
                                 TimeoutError, OSError))
    # no broker could be connected to at all (bootstrap failed); a timeout may come from a live broker
    unanswered = isinstance(exc, (errors.KafkaConnectionError, errors.NoBrokersAvailable, ConnectionRefusedError))
    return RetryableError(message, connection=link_down, unanswered=unanswered)
