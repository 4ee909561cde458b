"""The `kafka` exporter: queued OTLP requests to Kafka topics, as otelcol-contrib's kafka exporter writes them.

Messages
    `otlp_proto` (default): the message value is the serialized Export*ServiceRequest, the very
    bytes the queue holds when nothing splits it. `otlp_json`: the OTLP/JSON mapping (hex ids,
    integer enums). Either is what otelcol's kafka receiver (and edgeagent's) reads.
    `partition_traces_by_id`: one message per trace, keyed by the trace id as 32 lowercase hex
    characters (otelcol's key; an all-zero id gives an empty key). otelcol writes one message per
    trace per resource and scope; edgeagent puts all of a trace's spans in one message, with the
    same key, so they land on the same partition either way.
    `partition_metrics_by_resource_attributes` / `partition_logs_by_resource_attributes`: one
    message per resource, keyed by otelcol's 16-byte hash of its attributes (xhash.MapHash).
    Keyed messages go to the partition sarama and franz-go's default pick (FNV-1a of the key,
    modulo the partition count), so a trace written by edgeagent and by otelcol lands on one
    partition of a shared topic; unkeyed ones to a random partition.
    `topic_from_attribute`: each resource goes to the topic its value of that attribute names (the
    signal's topic when it names none), as in otelcol 0.165; resources of one topic share a message,
    and a request of one topic is sent as queued. Keyed messages take the first such value of their
    part. A value that cannot name a Kafka topic is refused for good (dead-lettered), since the
    broker never answers for it and retrying would hold the queue.

Delivery
    `send()` returns once the broker acknowledged every message of the request, with
    `producer.required_acks` (default all, -1; otelcol's default is 1). A message larger than
    `producer.max_message_bytes` fails with status 413, so the sender splits the batch before it
    dead-letters what still does not fit. `flush_max_messages` caps the messages in flight, and
    so in one produce request. An attempt that fails or times out is followed by one that sends
    only the messages not acknowledged yet; one that timed out may still be appended by the
    broker, so it can be in Kafka twice (at least once). `rate_limit` counts the messages'
    values, and the wait for it comes before the attempt's timeout starts (`pace`, as the OTLP
    exporters do).

Client library: aiokafka (with cramjam for snappy, lz4 and zstd), measured against
confluent-kafka on the test broker with bench/kafka_clients.py (1 KiB records, 4 partitions):
    produce (acks=all)    aiokafka  15,000 records/s (15 MiB/s)   confluent-kafka 186,000 (182 MiB/s)
    produce, 64 KiB        aiokafka      886 records/s (55 MiB/s)   confluent-kafka   2,247 (140 MiB/s)
    consume (group)       aiokafka 103,000 records/s             confluent-kafka 294,000
    group join            aiokafka  5.0 s                        confluent-kafka  23.2 s
    rebalance to 2+2      aiokafka  8.2 s                        confluent-kafka  26.3 s
    idempotent producer   aiokafka  fails (InitProducerId: UnknownError)   confluent-kafka works
    gzip, zstd            both work (aiokafka through cramjam)
librdkafka is several times faster per record, but the agent sends whole requests (tens to
hundreds of KiB), where aiokafka's 55 MiB/s is hundreds of thousands of spans a second, more
than one core parses. aiokafka is asyncio-native: `send()` awaits acknowledgements on the
agent's loop with no polling thread, and its rebalance listener is a coroutine, so the
receiver can wait for in-flight messages to become durable and commit their offsets before it
gives a partition up, which librdkafka's callbacks (run inside `poll()` on another thread)
make awkward. It also joins and rebalances groups faster against the test broker, takes an
ssl.SSLContext from edgeagent.tls, and types its errors with `retriable`. Idempotence is not
used: the sender's at-least-once delivery tolerates the rare duplicate.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import random
import struct
from typing import Any, Literal

import xxhash
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from pydantic import Field, field_validator, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration, split_endpoint
from edgeagent.configkafka import (
    DEFAULT_TOPICS,
    ClientConfig,
    Encoding,
    SignalsConfig,
    check_topic,
    classify,
    topic_problem,
)
from edgeagent.errors import PermanentError, RetryableError
from edgeagent.exporters.bandwidth import Encode, Pacer
from edgeagent.exporters.chain import SendResult
from edgeagent.exporters.config import ExporterConfig
from edgeagent.signals import Signal, resource_groups
from otel.otlpjson import to_otlp_json
from otel.shape import LOGS, TRACES

_ACKS = {0: 0, 1: 1, -1: "all"}
Message = tuple[str, bytes | None, bytes]  # topic, key, value


def _wire_bytes(messages: list[Message]) -> int:
    return sum(len(value) for _, _, value in messages)


class SignalConfig(ComponentConfig):
    topic: str | None = None
    encoding: Encoding | None = None

    _check_topic = field_validator("topic")(lambda cls, value: check_topic(value))


class ProducerConfig(ComponentConfig):
    max_message_bytes: int = Field(1_000_000, gt=0)
    required_acks: Literal[-1, 0, 1] = -1
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    flush_max_messages: int = Field(0, ge=0)
    linger: Duration | None = Field(None, ge=0)  # unset: send at once (aiokafka's 0; otelcol's is 10ms)
    allow_auto_topic_creation: bool = True  # what the client's metadata requests always ask

    @field_validator("allow_auto_topic_creation")
    @classmethod
    def _auto_creation(cls, allowed: bool) -> bool:
        if not allowed:
            raise ValueError("allow_auto_topic_creation: false is not supported: the Kafka client (aiokafka) always "
                             "lets the broker create a missing topic (the broker's auto.create.topics.enable decides)")
        return allowed

    @model_validator(mode="before")
    @classmethod
    def _all_means_minus_one(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("required_acks") == "all":
            return {**data, "required_acks": -1}
        return data


class StickyKeyConfig(ComponentConfig):
    hasher: Literal["sarama_compat", "murmur2"] = "sarama_compat"


class RoundRobinConfig(ComponentConfig):
    """`round_robin: {}`: records go to the partitions in turn, keys ignored (franz-go's RoundRobinPartitioner)."""


class RecordPartitionerConfig(ComponentConfig):
    """otelcol's `record_partitioner`: one of `sticky_key` (the default, sarama_compat's FNV-1a of the key,
    or Kafka's murmur2) and `round_robin`; without a key, sticky_key picks a partition at random."""
    sticky_key: StickyKeyConfig | None = None
    round_robin: RoundRobinConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_block_is_set(cls, data: Any) -> Any:
        """`round_robin:` alone (null) chooses it, as `round_robin: {}` does."""
        if isinstance(data, dict):
            return {key: {} if value is None and key in ("sticky_key", "round_robin") else value
                    for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _one(self) -> RecordPartitionerConfig:
        if self.sticky_key is not None and self.round_robin is not None:
            raise ValueError("set only one of sticky_key and round_robin (as otelcol asks)")
        return self

    def partitioner(self) -> Any:
        """aiokafka's partitioner callable for this choice."""
        if self.round_robin is not None:
            return _RoundRobin()
        if self.sticky_key is not None and self.sticky_key.hasher == "murmur2":
            return DefaultPartitioner()
        return sarama_partition


class _RoundRobin:
    """aiokafka partitioner: the available partitions (else all) in turn, whatever the key."""

    def __init__(self) -> None:
        self._turn = 0

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        choices = available or all_partitions
        self._turn += 1
        return choices[self._turn % len(choices)]


class RecordHeader(ComponentConfig):
    """One of otelcol's `record_headers`: a header set on every record."""
    name: str
    value: str = ""


SIGNAL_HEADER = "otelcol.signal"  # otelcol's signal_header: the record's signal (traces, metrics, logs)


class KafkaExporterConfig(ExporterConfig, ClientConfig, SignalsConfig):
    timeout: Duration = 5.0
    traces: SignalConfig = Field(default_factory=SignalConfig)
    metrics: SignalConfig = Field(default_factory=SignalConfig)
    logs: SignalConfig = Field(default_factory=SignalConfig)
    topic_from_attribute: str = ""
    partition_traces_by_id: bool = False
    partition_metrics_by_resource_attributes: bool = False
    partition_logs_by_resource_attributes: bool = False
    partition_logs_by_trace_id: bool = False  # a message per trace id of the log records (key: its hex)
    producer: ProducerConfig = Field(default_factory=ProducerConfig)
    record_partitioner: RecordPartitionerConfig = Field(default_factory=RecordPartitionerConfig)
    record_headers: list[RecordHeader] = Field(default_factory=list)
    signal_header: bool = False

    _check_topic = field_validator("topic")(lambda cls, value: check_topic(value))

    @model_validator(mode="after")
    def _no_headers(self) -> KafkaExporterConfig:
        if self.headers:
            raise ValueError("headers has no meaning for Kafka (it sets HTTP headers of otlphttp); use "
                             "record_headers for headers on the records")
        if self.partition_logs_by_resource_attributes and self.partition_logs_by_trace_id:
            raise ValueError("partition_logs_by_resource_attributes and partition_logs_by_trace_id are mutually "
                             "exclusive (as in otelcol); keep one")
        if self.signal_header and any(header.name == SIGNAL_HEADER for header in self.record_headers):
            raise ValueError(f"record_headers: {SIGNAL_HEADER!r} is reserved when signal_header is enabled "
                             f"(as in otelcol)")
        return self

    def record_headers_for(self, signal: Signal) -> list[tuple[str, bytes]]:
        """The headers of every record of `signal`: record_headers, then the signal header if asked for."""
        headers = [(header.name, header.value.encode()) for header in self.record_headers]
        return headers + [(SIGNAL_HEADER, signal.label.encode())] if self.signal_header else headers

    def config_warnings(self) -> list[str]:
        warnings = self.client_warnings() + super().config_warnings()
        if self.rack_id:
            warnings.append("rack_id has no effect on a producer, as in otelcol: it picks the replica a consumer "
                            "fetches from")
        return warnings

    def topic_for(self, signal: Signal) -> str:
        return getattr(self, signal.label).topic or self.topic or DEFAULT_TOPICS[signal]

    def keyed(self, signal: Signal) -> bool:
        return {Signal.TRACES: self.partition_traces_by_id,
                Signal.METRICS: self.partition_metrics_by_resource_attributes,
                Signal.LOGS: self.partition_logs_by_resource_attributes or self.partition_logs_by_trace_id}[signal]


class KafkaExporter:
    """Produces each request as one or more messages; raises RetryableError or PermanentError."""

    resumes_attempts = True  # export chain: an attempt sends only what earlier ones did not get acknowledged

    def __init__(self, component_id: str, config: KafkaExporterConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self.host = host
        self.configured = True
        self._producer: Any = None
        self._starting = asyncio.Lock()
        self._closed = False
        self._bandwidth: Pacer[list[Message]] = Pacer(config.rate_limit, _wire_bytes)
        self._acked = _Acknowledged()

    def describe(self) -> str:
        return ",".join(self.config.brokers)

    def upstream_addresses(self) -> list[tuple[str, int]]:
        """The bootstrap brokers: any of them accepting a connection is worth a try."""
        return [split_endpoint(broker, 9092) for broker in self.config.brokers]

    async def start(self) -> None:
        self.config.client_options()  # reads the TLS files now, so a missing one fails the start
        self._closed = False

    async def shutdown(self) -> None:
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def _connected(self) -> Any:
        """The producer, started on first use (and again after a failed start): brokers may be down at start-up."""
        async with self._starting:
            if self._producer is not None:
                return self._producer
            if self._closed:
                raise RetryableError("the exporter is shutting down")
            producer_config = self.config.producer
            producer = AIOKafkaProducer(
                **self.config.client_options(), acks=_ACKS[producer_config.required_acks],
                compression_type=None if producer_config.compression == "none" else producer_config.compression,
                max_request_size=producer_config.max_message_bytes,
                max_batch_size=producer_config.max_message_bytes,
                **({"request_timeout_ms": int(self.config.timeout * 1000)} if self.config.timeout else {}),
                partitioner=self.config.record_partitioner.partitioner(),
                linger_ms=int((producer_config.linger or 0) * 1000))
            try:
                await asyncio.wait_for(producer.start(), self.config.timeout or None)
            except BaseException as exc:
                await producer.stop()
                if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
                    raise
                error = classify(exc, f"connecting to {self.describe()}")
                if isinstance(error, RetryableError) and isinstance(exc, TimeoutError):
                    error.unanswered = None  # brokers gone, or slow: the link checks
                raise error from None
            self._producer = producer
            return producer

    async def send(self, signal: Signal, body: bytes) -> SendResult:
        producer = await self._connected()
        messages = await self._bandwidth.wire(body, self._encoder(signal))
        acked = self._acked.of(body)  # messages of this request acknowledged in earlier attempts
        todo = [index for index in range(len(messages)) if index not in acked]
        step = self.config.producer.flush_max_messages or len(todo) or 1
        headers = self.config.record_headers_for(signal) or None
        try:
            async with asyncio.timeout(self.config.timeout or None):  # 0: none, as otelcol
                for start in range(0, len(todo), step):
                    acks = []
                    for index in todo[start:start + step]:
                        topic, key, value = messages[index]
                        ack = await producer.send(topic, value, key=key, headers=headers)
                        ack.add_done_callback(functools.partial(_note, acked, index))
                        acks.append(asyncio.shield(ack))  # a timeout leaves it to be noted when it comes
                    await asyncio.gather(*acks)
        except TimeoutError:
            # a started producer keeps reconnecting on its own and only times out: the link checks
            # whether a broker still accepts connections (brokers gone, or slow?)
            raise RetryableError(f"the brokers did not acknowledge within {self.config.timeout:g}s",
                                 connection=True, unanswered=None) from None
        except Exception as exc:
            error = classify(exc, f"producing to {self.describe()}")
            if isinstance(error, PermanentError):
                self._acked.forget(body)
            raise error from None
        self._acked.forget(body)
        return SendResult()

    async def pace(self, signal: Signal, body: bytes) -> None:
        """Wait until `rate_limit` lets this request's messages on the wire (the chain awaits it before the
        attempt's timeout starts)."""
        await self._bandwidth.pace(body, self._encoder(signal))

    def _encoder(self, signal: Signal) -> Encode[list[Message]]:
        async def encode(body: bytes) -> list[Message]:
            messages = self.messages(signal, body)
            limit = self.config.producer.max_message_bytes
            largest = max((len(value) for _, _, value in messages), default=0)
            if largest > limit:
                raise PermanentError(f"a message of {largest} bytes exceeds producer::max_message_bytes ({limit})",
                                     status=413)
            return messages
        return encode

    def messages(self, signal: Signal, body: bytes) -> list[Message]:
        """(topic, key, value) of every message one queued request becomes."""
        config = self.config
        json_encoded = config.encoding_for(signal) == "otlp_json"
        if not (json_encoded or config.keyed(signal) or config.topic_from_attribute):
            return [(config.topic_for(signal), None, body)]
        request = signal.request_class.FromString(body)
        parts = (split_by_key(signal, request, config.partition_logs_by_trace_id) if config.keyed(signal)
                 else [(None, part) for part in self._by_topic(signal, request)])
        out: list[Message] = []
        for key, part in parts:
            value = (json.dumps(to_otlp_json(part, integer_enums=True), separators=(",", ":")).encode()
                     if json_encoded else body if part is request else part.SerializeToString())
            out.append((self._topic(signal, part), key, value))
        return out

    def _topic(self, signal: Signal, request: Any) -> str:
        """`topic_from_attribute`: the first resource's value of that attribute, as otelcol picks it."""
        for group in resource_groups(signal, request) if self.config.topic_from_attribute else ():
            topic = self._named_topic(group)
            if topic is not None:
                return topic
        return self.config.topic_for(signal)

    def _named_topic(self, group: Any) -> str | None:
        """The topic a resource names in its `topic_from_attribute` attribute, or None."""
        name = self.config.topic_from_attribute
        for attribute in group.resource.attributes:
            topic: str = attribute.value.string_value
            if attribute.key == name and topic:
                problem = topic_problem(topic)
                if problem is not None:  # never answered for: retried, it would hold the queue for good
                    raise PermanentError(f"the topic from resource attribute {name}: {problem}",
                                         status="invalid topic")
                return topic
        return None

    def _by_topic(self, signal: Signal, request: Any) -> list[Any]:
        """With `topic_from_attribute`, the request's resources by the topic each names (the signal's when it
        names none), as otelcol 0.165 sends each resource: a batch merges the requests of many clients,
        and the first resource's topic for all would send every tenant's data to one. One topic: the request."""
        if not self.config.topic_from_attribute:
            return [request]
        groups = list(resource_groups(signal, request))
        topics = [self._named_topic(group) or self.config.topic_for(signal) for group in groups]
        if len(set(topics)) <= 1:
            return [request]
        parts: dict[str, Any] = {}
        for group, topic in zip(groups, topics, strict=True):
            part = parts.get(topic)
            if part is None:
                part = parts[topic] = signal.request_class()
            resource_groups(signal, part).add().CopyFrom(group)
        return list(parts.values())


class _Acknowledged:
    """Which messages of a request the broker acknowledged, kept while the request is tried again.

    A request becomes many messages (one per trace with partition_traces_by_id), acknowledged one
    by one. Another attempt sends only the others: sending them all again duplicated every
    acknowledged one on each attempt, and a request whose messages take longer than one attempt's
    timeout never got through. Kept by a 128-bit hash of the request's bytes, so that a request the
    sender leases again after giving it back resumes too, for the last `_KEPT` requests tried."""

    _KEPT = 256

    def __init__(self) -> None:
        self._requests: collections.OrderedDict[bytes, set[int]] = collections.OrderedDict()

    def of(self, body: bytes) -> set[int]:
        key = xxhash.xxh3_128_digest(body)
        acked = self._requests.get(key)
        if acked is None:
            acked = self._requests[key] = set()
            while len(self._requests) > self._KEPT:
                self._requests.popitem(last=False)
        return acked

    def forget(self, body: bytes) -> None:
        self._requests.pop(xxhash.xxh3_128_digest(body), None)


def _note(acked: set[int], index: int, ack: asyncio.Future[Any]) -> None:
    if not ack.cancelled() and ack.exception() is None:
        acked.add(index)


# ---- keys and partitions, as otelcol computes them -----------------------------------------------

def split_by_key(signal: Signal, request: Any, logs_by_trace_id: bool = False) -> list[tuple[bytes | None, Any]]:
    """Traces: one request per trace id (key: its hex). Metrics and logs: one per resource (key: MapHash);
    logs with `logs_by_trace_id`: one per trace id of the records (key: its hex; none for records without)."""
    if signal is Signal.LOGS and logs_by_trace_id:
        by_trace = LOGS.partition(request, lambda record: record.trace_id)
        return [(trace_key(trace_id) or None, part) for trace_id, part in by_trace.items()]
    if signal is not Signal.TRACES:
        out: list[tuple[bytes | None, Any]] = []
        for group in resource_groups(signal, request):
            part = signal.request_class()
            resource_groups(signal, part).add().CopyFrom(group)
            out.append((map_hash(group.resource.attributes), part))
        return out
    parts = TRACES.partition(request, lambda span: span.trace_id)
    return [(trace_key(trace_id), part) for trace_id, part in parts.items()]


def trace_key(trace_id: bytes) -> bytes:
    """otelcol's key: the trace id in lowercase hex, or empty for an empty (all-zero) id."""
    return trace_id.hex().encode() if any(trace_id) else b""


def map_hash(attributes: Any) -> bytes:
    """xhash.MapHash of a KeyValue list (what otelcol 0.165 keys a resource's messages by): xxHash64 of a
    typed, key-sorted encoding whose keys, strings and bytes carry their length, twice."""
    if not attributes:
        return bytes(16)
    buffer = bytearray()
    _write_map(buffer, attributes)
    first = xxhash.xxh64_intdigest(bytes(buffer))
    buffer += b"\xf3"
    return struct.pack("<QQ", first, xxhash.xxh64_intdigest(bytes(buffer)))


def _write_map(buffer: bytearray, attributes: Any) -> None:
    # every entry, a repeated key too, in key order (a stable sort, as Go's is for maps this small)
    for attribute in sorted(attributes, key=lambda attribute: attribute.key.encode()):
        buffer += b"\xf4"
        _write_sized(buffer, attribute.key.encode())
        _write_value(buffer, attribute.value)


def _write_sized(buffer: bytearray, data: bytes) -> None:
    """The length as an unsigned varint, then the bytes: without it distinct maps could encode alike."""
    size = len(data)
    while size >= 0x80:
        buffer.append(size & 0x7F | 0x80)
        size >>= 7
    buffer.append(size)
    buffer += data


def _write_value(buffer: bytearray, value: Any) -> None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        buffer += b"\xf7"
        _write_sized(buffer, value.string_value.encode())
    elif kind == "bool_value":
        buffer += b"\xf8" if value.bool_value else b"\xf9"
    elif kind == "int_value":
        buffer += b"\xfa" + struct.pack("<q", value.int_value)
    elif kind == "double_value":
        buffer += b"\xfb" + struct.pack("<d", value.double_value)
    elif kind == "kvlist_value":
        buffer += b"\xfc"
        _write_map(buffer, value.kvlist_value.values)
        buffer += b"\xfd"
    elif kind == "array_value":
        buffer += b"\xfe"
        for item in value.array_value.values:
            _write_value(buffer, item)
        buffer += b"\xff"
    elif kind == "bytes_value":
        buffer += b"\xf6"
        _write_sized(buffer, value.bytes_value)
    else:
        buffer += b"\xf5"


def fnv1a_32(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def sarama_partition(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka partitioner with sarama's (and franz-go's sarama_compat) choice: FNV-1a of the key as a
    signed 32-bit number, remainder truncated towards zero, sign dropped; random without a key."""
    if key is None:
        return random.choice(available or all_partitions)
    signed: int = struct.unpack("<i", struct.pack("<I", fnv1a_32(key)))[0]
    return all_partitions[abs(signed) % len(all_partitions)]


FACTORY = Factory("kafka", KafkaExporterConfig, KafkaExporter)
