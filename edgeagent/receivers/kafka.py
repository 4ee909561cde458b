"""The `kafka` receiver (hub tier): OTLP messages from Kafka topics into the durable queue.

Design note
===========
* Promise: an offset is committed only once the data of its message is durable (committed to
  the LMDB queue, or to the tail sampler's raw buffer). A crash, a kill -9 or a rebalance
  therefore never loses a message; it may deliver again the messages whose offsets were not
  committed yet: at most the in-flight window plus what became durable since the last commit
  (`autocommit::interval`), per partition.
* One consumer-group member per receiver, subscribed to the topic(s) of every signal whose
  pipelines list the receiver (otelcol's keys: `traces::topic`, ..., the deprecated top-level
  `topic`; defaults otlp_spans, otlp_metrics, otlp_logs). A topic belongs to one signal.
* Per assigned partition: fetched records wait in a backlog; up to `_WINDOW` of them are in
  flight at once, each through `admission` (the memory limiter's budget) and `consume` (the
  pipelines, up to the durable commit). In-flight messages finish in any order; the partition
  remembers which are durable and advances its *durable offset* over the longest durable
  prefix. Offsets may have gaps (compaction, transaction markers), so the prefix follows the
  sequence of dispatched records, not offset + 1. Fetching from a partition pauses while its
  backlog holds `_BACKLOG` records, or while the messages fetched and not yet durable, over all
  partitions (backlogs and in flight), hold `_HELD_BYTES`: a bound per partition alone would let
  memory grow with the partition count while the pipeline refuses. It resumes below half.
* Before a message is parsed, the memory limiter's budget is raised to what parsing it may take
  (receivers/parse_cost.py, as for OTLP requests): a message under 1 MB can take 90 MiB parsed,
  and the window holds several. Large messages are parsed on a worker thread.
* A retryable refusal (memory limiter, full queue) retries the same message after a bounded,
  growing pause (`error_backoff`); a message is never skipped for it. A message that does not
  decode, whose parse could never fit the memory limit, that could never fit its queue (more
  items than queue_size), or whose record batch cannot be read (bad CRC, bytes that do not
  decompress, records that decompress to more than `max_decompress_batch_bytes`; kafka_fetch.py,
  kafka_decompress.py), is counted
  (`otelcol_kafka_receiver_unmarshal_failed_*`), logged once per episode and skipped: it is
  marked durable, so its offset is committed with the others. So is a message the upstream
  refused for good (with `sending_queue::wait_for_result` it is in the dead-letter store; an
  exporter without a queue keeps nothing): offered again it would be refused again, holding its
  partition for as long as the upstream says so (and dead-lettered once more each time).
* Commits: the durable offsets of all partitions, at most once per `autocommit::interval` (as
  soon as something became durable with `autocommit::enable: false`), when a partition is
  revoked and at shutdown. Commit failures are retried with the next commit; a failure only
  widens what may be delivered twice.
* Rebalance: on revocation the partition's backlog is dropped (its next owner reads it again),
  its in-flight messages get up to half the session timeout to become durable (a message
  sleeping before a retry gives up at once), their offsets are committed, then aiokafka lets
  the partition go. A message still not durable by then is read again by the next owner.
* Request metadata (what `from_context` and the batch processor's `metadata_keys` read): each
  message's `kafka.topic`, `kafka.partition`, `kafka.offset` and record headers, as otelcol's.
* Lag: `kafka_consumer_lag{topic, partition, group}` = the partition's high watermark (from the
  last fetch) minus the offset this member committed (or the group's committed offset, or the
  first offset it read, until it commits).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from pydantic import Field, field_validator, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration, Int32
from edgeagent.configkafka import DEFAULT_TOPICS, ClientConfig, Encoding, SignalsConfig
from edgeagent.configretry import backoff_delay
from edgeagent.errors import BadRequestError, PermanentError, RefusedError, RetryableError, ShutdownError
from edgeagent.receivers import codec, parse_cost, refused
from edgeagent.receivers.kafka_decompress import DEFAULT_MAX_BYTES, MAX_BYTES, DecompressTooLarge
from edgeagent.receivers.kafka_fetch import Fetcher, Unreadable
from edgeagent.signals import Payload, Signal, resource_groups

log = logging.getLogger(__name__)
_WINDOW = 16  # messages of one partition in flight at once
_BACKLOG = 256  # fetched records of one partition waiting before its fetching pauses
_HELD_BYTES = 64 << 20  # message bytes fetched and not yet durable, over all partitions, before fetching pauses
_QUIET = 60.0  # seconds without a malformed message that end an episode
# How long the group waits for its members to rejoin once a rebalance began: franz-go's default,
# as otelcol's receiver asks it (it has no key for it). aiokafka would ask session_timeout, while
# a revoke (settling in-flight messages, then committing) may take session_timeout and a second;
# a member not back in time is dropped from the group and its commit refused. With a
# session_timeout past a minute, the revoke's bound and this margin win.
_REBALANCE_TIMEOUT = 60.0
_REVOKE_MARGIN = 5.0
LAG = "kafka_consumer_lag"


_ASSIGNORS: dict[str, Any] = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
                              "sticky": StickyPartitionAssignor}


class SignalTopics(ComponentConfig):
    topic: str | None = None  # deprecated in otelcol for topics
    topics: list[str] | None = None
    encoding: Encoding | None = None

    @model_validator(mode="after")
    def _one_of_topic_and_topics(self) -> SignalTopics:
        if self.topic and self.topics:
            raise ValueError("set topic or topics, not both (as otelcol asks): topics would win and topic be ignored")
        return self


class AutoCommitConfig(ComponentConfig):
    enable: bool = True
    interval: Duration = 1.0


class ErrorBackoffConfig(ComponentConfig):
    """How long to wait before offering a refused message again (otelcol's `error_backoff` keys).

    edgeagent always retries a refused message, so `enabled: false` and `max_elapsed_time`
    (after which otelcol gives the message up) are refused."""

    initial_interval: Duration = 0.25
    randomization_factor: float = Field(0.5, ge=0, le=1)
    multiplier: float = Field(1.5, ge=1)
    max_interval: Duration = 5.0

    @model_validator(mode="before")
    @classmethod
    def _never_gives_up(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if data.pop("enabled", True) is not True:
                raise ValueError("enabled: false is not supported: edgeagent retries a refused message until it is "
                                 "durable and never skips it; remove the key")
            if data.pop("max_elapsed_time", 0) not in (0, "0", "0s"):
                raise ValueError("max_elapsed_time is not supported: edgeagent retries a refused message until it is "
                                 "durable; remove the key")
        return data

    @model_validator(mode="after")
    def _check(self) -> ErrorBackoffConfig:
        if self.initial_interval <= 0 or self.max_interval < self.initial_interval:
            raise ValueError("initial_interval must be positive and max_interval at least initial_interval")
        return self


class MessageMarkingConfig(ComponentConfig):
    """otelcol's `message_marking`. edgeagent marks a message only once its data is durable, retries
    a refused one until it is (never giving up, so `on_error` changes nothing: otelcol reads it
    only once its retries stop) and skips (marks) one that does not decode or is refused for good:
    `after: true, on_permanent_error: true`. As in otelcol, `on_permanent_error` unset takes
    `on_error`'s value."""

    after: bool = True
    on_error: bool = True
    on_permanent_error: bool = True

    @model_validator(mode="after")
    def _check(self) -> MessageMarkingConfig:
        if not self.after:
            raise ValueError("after: false is not supported: edgeagent commits an offset only after the data of its "
                             "message is durable")
        inherited = "on_error" in self.model_fields_set and "on_permanent_error" not in self.model_fields_set
        if inherited:
            self.on_permanent_error = self.on_error
        if not self.on_permanent_error:
            reason = " (unset, it takes on_error's value, as in otelcol; add on_permanent_error: true)" \
                if inherited else ""
            raise ValueError(f"on_permanent_error: false is not supported{reason}: a message that cannot be decoded "
                             f"(a permanent error) is counted, logged and skipped, not left to block its partition")
        return self


class HeaderExtractionConfig(ComponentConfig):
    extract_headers: bool = False
    headers: list[str] = Field(default_factory=list)


class KafkaReceiverConfig(ClientConfig, SignalsConfig):
    traces: SignalTopics = Field(default_factory=SignalTopics)
    metrics: SignalTopics = Field(default_factory=SignalTopics)
    logs: SignalTopics = Field(default_factory=SignalTopics)
    group_id: str = "otel-collector"
    initial_offset: Literal["latest", "earliest"] = "latest"
    session_timeout: Duration = 10.0
    heartbeat_interval: Duration = 3.0
    autocommit: AutoCommitConfig = Field(default_factory=AutoCommitConfig)
    message_marking: MessageMarkingConfig = Field(default_factory=MessageMarkingConfig)
    header_extraction: HeaderExtractionConfig = Field(default_factory=HeaderExtractionConfig)
    error_backoff: ErrorBackoffConfig = Field(default_factory=ErrorBackoffConfig)
    min_fetch_size: Int32 = Field(1, ge=0)  # 0, which otelcol takes, asks for 1 (consumer_options)
    max_fetch_size: Int32 = Field(0, ge=0)  # 0: no limit
    max_fetch_wait: Duration = 0.25
    max_partition_fetch_size: Int32 = Field(1048576, gt=0)
    # the most one record batch's records may decompress to (kafka_decompress.py); a batch over it is skipped
    max_decompress_batch_bytes: int = DEFAULT_MAX_BYTES
    group_rebalance_strategy: str = "range"  # one of _ASSIGNORS; otelcol's default, cooperative-sticky, is refused
    # otelcol's newer list, in order of preference (the group takes the first every member offers)
    group_rebalance_strategies: list[str] = Field(default_factory=list)
    UNSET_STAYS_UNSET = ClientConfig.UNSET_STAYS_UNSET | {"group_rebalance_strategy"}  # exclusive of ..._strategies
    group_instance_id: str = ""  # static group membership: a restart within session_timeout keeps the partitions

    @field_validator("max_decompress_batch_bytes")
    @classmethod
    def _decompress_bound(cls, value: int) -> int:
        if not 1 <= value <= MAX_BYTES:  # otelcol's range and words
            raise ValueError(f"max_decompress_batch_bytes ({value}) must be between 1 and {MAX_BYTES}")
        return value

    @model_validator(mode="after")
    def _check(self) -> KafkaReceiverConfig:
        if not self.group_id:
            raise ValueError("group_id must not be empty")
        if self.group_rebalance_strategies and "group_rebalance_strategy" in self.model_fields_set:
            raise ValueError("group_rebalance_strategy and group_rebalance_strategies are mutually exclusive "
                             "(as in otelcol); keep group_rebalance_strategies")
        key = "group_rebalance_strategies" if self.group_rebalance_strategies else "group_rebalance_strategy"
        for strategy in self.group_rebalance_strategies or [self.group_rebalance_strategy]:
            if strategy not in _ASSIGNORS:
                raise ValueError(f"{key}: {strategy!r} is not supported: the Kafka client "
                                 f"(aiokafka) offers {', '.join(_ASSIGNORS)}, no cooperative rebalancing and no "
                                 f"balancer extensions")
        if self.session_timeout <= 0 or not 0 < self.heartbeat_interval < self.session_timeout:
            raise ValueError("heartbeat_interval must be positive and shorter than session_timeout")
        for signal in Signal:
            for topic in self.topics_for(signal):
                if topic.startswith("^"):
                    raise ValueError(f"{signal.label}: topic {topic!r} is a regular expression; edgeagent subscribes "
                                     f"to named topics only")
        return self

    def config_warnings(self) -> list[str]:
        return self.client_warnings()

    def topics_for(self, signal: Signal) -> list[str]:
        section: SignalTopics = getattr(self, signal.label)
        if section.topics:
            return list(section.topics)
        return [section.topic or self.topic or DEFAULT_TOPICS[signal]]

    def consumer_options(self) -> dict[str, Any]:
        strategies = self.group_rebalance_strategies or [self.group_rebalance_strategy]
        options = {**self.client_options(), "group_id": self.group_id, "auto_offset_reset": self.initial_offset,
                   "enable_auto_commit": False, "session_timeout_ms": int(self.session_timeout * 1000),
                   "heartbeat_interval_ms": int(self.heartbeat_interval * 1000),
                   "rebalance_timeout_ms": int(max(_REBALANCE_TIMEOUT, self.session_timeout + _REVOKE_MARGIN) * 1000),
                   "fetch_min_bytes": max(1, self.min_fetch_size),  # 0: empty fetches at once, a spin
                   "fetch_max_wait_ms": int(self.max_fetch_wait * 1000),
                   "max_partition_fetch_bytes": self.max_partition_fetch_size,
                   "partition_assignment_strategy": tuple(_ASSIGNORS[name] for name in strategies)}
        if self.max_fetch_size:
            options["fetch_max_bytes"] = self.max_fetch_size
        if self.group_instance_id:
            options["group_instance_id"] = self.group_instance_id
        if self.rack_id:
            options["client_rack"] = self.rack_id
        return options


@dataclass
class _Partition:
    """One assigned partition: its backlog, the messages in flight and how far it is durable."""

    topic: str
    partition: int
    signal: Signal
    encoding: str
    consumer: Any  # the SignalConsumer of its signal
    backlog: collections.deque = field(default_factory=collections.deque)
    backlog_bytes: int = 0
    in_flight: set[asyncio.Task[int | None]] = field(default_factory=set)
    pending: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # offset -> durable?
    durable: int | None = None  # the offset after the longest durable prefix: what a commit writes
    committed: int | None = None  # what this member (or the group before it) committed
    first: int | None = None  # the first offset read in this assignment
    paused: bool = False
    revoked: asyncio.Event = field(default_factory=asyncio.Event)

    def mark_durable(self, offset: int) -> bool:
        """Record a message as durable; True when the durable offset moved."""
        self.pending[offset] = True
        moved = False
        while self.pending:
            first, done = next(iter(self.pending.items()))
            if not done:
                break
            self.pending.popitem(last=False)
            self.durable = first + 1
            moved = True
        return moved


class KafkaReceiver:
    """Consumes the topics of the signals it serves; see the design note."""

    def __init__(self, component_id: str, config: KafkaReceiverConfig, host: Any):
        self.id = component_id
        self.config = config
        self.host = host
        self._signals: dict[str, tuple[Signal, Any]] = {}  # topic -> (signal, consumer)
        self._consumer: Any = None
        self._partitions: dict[Any, _Partition] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self._dirty = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._episodes: dict[str, float] = {}  # what went wrong -> when it was last seen
        self._held = 0  # bytes of the messages in the backlogs and in flight
        self._starved = False  # a partition stays paused until _held falls below half of _HELD_BYTES
        self._malformed: dict[Signal, Any] = {}

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        for signal in Signal:
            consumer = self.host.consumer(self.id, signal)
            if consumer is None:
                continue
            for topic in self.config.topics_for(signal):
                if topic in self._signals:
                    raise ValueError(f"receivers::{self.id}: topic {topic!r} is configured for both "
                                     f"{self._signals[topic][0].label} and {signal.label}; give each signal its own")
                self._signals[topic] = (signal, consumer)
        if not self._signals:
            return
        options = self.config.consumer_options()  # reads TLS files: a missing one fails the start
        metrics = self.host.metrics
        for signal in {signal for signal, _ in self._signals.values()}:
            self._malformed[signal] = metrics.counter(
                f"otelcol_kafka_receiver_unmarshal_failed_{signal.item_name}",
                "Kafka messages that could not be decoded and were skipped.", ("receiver", "topic"))
        _lag_gauge(metrics).receivers.append(self)
        self._stopping.clear()
        self._spawn(self._run(options), "fetch")
        self._spawn(self._commit_loop(), "commit")

    def _spawn(self, coroutine: Any, what: str) -> None:
        task = asyncio.create_task(coroutine, name=f"receiver:{self.id}:{what}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("kafka receiver task stopped unexpectedly", exc_info=task.exception(),
                      extra={"receiver": self.id, "task": task.get_name()})
            self.host.component_stopped(f"receivers::{self.id}", str(task.exception()))

    async def shutdown(self) -> None:
        """Stop fetching, let in-flight messages become durable, commit their offsets, leave the group."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        partitions = list(self._partitions.values())
        await self._settle(partitions, grace=2.0)
        await self._commit(partitions, timeout=1.5)  # while the consumer is still ours to commit with
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            self._partitions.clear()
            await consumer.stop()
        if self.host is not None and hasattr(self.host, "metrics"):
            gauge = _lag_gauge(self.host.metrics)
            if self in gauge.receivers:
                gauge.receivers.remove(self)

    # ---- fetching ----------------------------------------------------------------------------------

    async def _run(self, options: dict[str, Any]) -> None:
        attempt = 0
        while self._consumer is None:
            consumer = AIOKafkaConsumer(**options)
            consumer.subscribe(list(self._signals), listener=_Listener(self))
            try:
                await consumer.start()
            except BaseException as exc:
                await consumer.stop()
                if not isinstance(exc, KafkaError):
                    raise  # cancelled by shutdown, or a bug
                attempt += 1
                self._episode("connect", "cannot reach the Kafka brokers; retrying", exc)
                await self._pause(attempt)
                continue
            self._consumer = consumer
        fetcher = Fetcher(consumer, step_wait=self.config.max_fetch_wait + 1.0, owner=self._partitions.get,
                          max_decompress_batch_bytes=self.config.max_decompress_batch_bytes)
        log.info("kafka receiver consuming", extra={"receiver": self.id, "topics": sorted(self._signals),
                                                    "group": self.config.group_id})
        attempt = 0
        while not self._stopping.is_set():
            try:
                ready = [tp for tp, partition in self._partitions.items() if not partition.paused]
                batches = await fetcher.fetch(ready, timeout=0.5, max_records=_BACKLOG)
            except KafkaError as exc:
                attempt += 1
                self._episode("fetch", "fetching from Kafka failed; retrying", exc)
                await self._pause(attempt)
                continue
            attempt = 0
            for tp, (holder, records) in batches.items():
                partition = self._partitions.get(tp)
                # records taken before a rebalance are not the new assignment's (it reads them again
                # from the committed offset): only those taken by the partition's holder now go on
                if partition is not None and partition is holder:
                    self._enqueue(tp, partition, records)

    def _enqueue(self, tp: Any, partition: _Partition, records: list) -> None:
        if partition.first is None:
            partition.first = records[0].offset
        partition.backlog.extend(records)
        size = sum(len(record.value or b"") for record in records)
        partition.backlog_bytes += size
        self._held += size
        self._pump(partition)
        if not partition.paused and not self._room(partition, 1.0):
            self._consumer.pause(tp)
            partition.paused = True
            self._starved = self._starved or self._held >= _HELD_BYTES

    def _room(self, partition: _Partition, share: float) -> bool:
        return len(partition.backlog) < _BACKLOG * share and self._held < _HELD_BYTES * share

    def _pump(self, partition: _Partition) -> None:
        """Start delivering backlog records while the window has room."""
        while partition.backlog and len(partition.in_flight) < _WINDOW and not partition.revoked.is_set():
            record = partition.backlog.popleft()
            size = len(record.value or b"")
            partition.backlog_bytes -= size
            partition.pending[record.offset] = False
            task = asyncio.create_task(self._deliver(partition, record))
            partition.in_flight.add(task)
            task.add_done_callback(functools.partial(self._delivered, partition, size))
        if partition.paused:
            if self._room(partition, 0.5):
                self._resume(partition)
            elif len(partition.backlog) < _BACKLOG * 0.5:  # waits for the others' messages to go
                self._starved = True

    def _resume(self, partition: _Partition) -> None:
        partition.paused = False
        if self._consumer is not None and not partition.revoked.is_set():
            self._consumer.resume(TopicPartition(partition.topic, partition.partition))

    def _delivered(self, partition: _Partition, size: int, task: asyncio.Task[int | None]) -> None:
        partition.in_flight.discard(task)
        self._held -= size
        offset = None if task.cancelled() or task.exception() is not None else task.result()
        if offset is not None and partition.mark_durable(offset):
            self._dirty.set()
        self._pump(partition)
        if self._starved and self._held < _HELD_BYTES * 0.5:
            self._starved = False
            for other in list(self._partitions.values()):
                if other.paused and self._room(other, 0.5):
                    self._resume(other)

    async def _deliver(self, partition: _Partition, record: Any) -> int | None:
        """Offer one message until it is durable; its offset, or None if the partition went first."""
        attempt = 0
        while True:
            try:
                if isinstance(record, Unreadable):  # its batch does not decompress or check: as a bad message
                    raise BadRequestError(f"the record batch does not decode: {record.error!r}")
                await self._offer(partition, record)
                return record.offset
            except BadRequestError as exc:
                self._malformed[partition.signal].inc(1, self.id, partition.topic)
                what, message = _why_skipped(record)
                self._episode(f"{what}:{partition.topic}", f"{message}; counted in "
                              f"otelcol_kafka_receiver_unmarshal_failed_{partition.signal.item_name}", exc,
                              topic=partition.topic, partition=partition.partition, offset=record.offset)
                return record.offset
            except (PermanentError, RefusedError) as exc:  # offered again, it would be refused again
                self._episode(f"permanent:{partition.topic}", "the upstream refuses Kafka messages for good; "
                              "moving on (dead-lettered when the exporter has a queue)", exc, topic=partition.topic,
                              partition=partition.partition, offset=record.offset)
                return record.offset
            except ShutdownError:
                return None
            except Exception as exc:  # refused (memory, full queue) or failed: the same message again, later
                attempt += 1
                if not isinstance(exc, RetryableError):
                    log.error("delivering a Kafka message failed; retrying it", exc_info=exc,
                              extra={"receiver": self.id, "topic": partition.topic, "offset": record.offset})
                else:
                    self._episode(f"refused:{partition.topic}", "the pipeline refuses Kafka messages; retrying "
                                  "them", exc, topic=partition.topic)
                delay = getattr(exc, "retry_after", None) or backoff_delay(self.config.error_backoff, attempt)
            # waits outside the except block: the error's traceback holds the parsed message, which is
            # parsed again for the next offer instead of being kept in memory, unaccounted, meanwhile
            if await _wait_for(partition.revoked, min(delay, self.config.error_backoff.max_interval)) or \
                    self._stopping.is_set():
                return None

    async def _offer(self, partition: _Partition, record: Any) -> None:
        """One offer of a message: admitted by the memory budget, parsed, and consumed up to its durable commit."""
        value = record.value or b""
        content_type = codec.JSON if partition.encoding == "otlp_json" else codec.PROTOBUF
        refused.check(partition.consumer, "kafka", partition.signal, value, content_type)
        with partition.consumer.admission("kafka", len(value)) as reservation:
            await parse_cost.admit(reservation, partition.signal, value, content_type)
            metadata = _metadata(partition, record)
            payload = await parse_cost.decode(partition.signal, value, content_type, metadata, "")
            if payload.items:  # an empty request (or tombstone) carries nothing to keep
                self._extract_headers(partition.signal, payload, record.headers)
                await partition.consumer.consume(payload, "kafka")

    def _extract_headers(self, signal: Signal, payload: Payload, headers: Any) -> None:
        """header_extraction: each listed header as a resource attribute `kafka.header.<name>`."""
        settings = self.config.header_extraction
        if not settings.extract_headers or not settings.headers:
            return
        found: dict[str, str] = {}
        for key, value in headers or ():
            if key in settings.headers and key not in found:
                found[key] = (value or b"").decode("utf-8", "replace")
        if not found:
            return
        for group in resource_groups(signal, payload.mutable_message()):
            for key, value in found.items():
                name = f"kafka.header.{key}"
                attribute = next((a for a in group.resource.attributes if a.key == name), None)
                if attribute is None:
                    attribute = group.resource.attributes.add(key=name)
                attribute.value.string_value = value

    # ---- rebalancing -------------------------------------------------------------------------------

    def assigned(self, assigned: set) -> None:
        for tp in assigned:
            if tp in self._partitions or tp.topic not in self._signals:
                continue
            signal, consumer = self._signals[tp.topic]
            self._partitions[tp] = _Partition(tp.topic, tp.partition, signal, self.config.encoding_for(signal),
                                              consumer)
        log.info("kafka partitions assigned", extra={"receiver": self.id, "partitions": _names(assigned)})

    async def revoked(self, revoked: set) -> None:
        partitions = [self._partitions.pop(tp) for tp in revoked if tp in self._partitions]
        if not partitions:
            return
        await self._settle(partitions, grace=self.config.session_timeout / 2)
        await self._commit(partitions, timeout=self.config.session_timeout / 2)
        log.info("kafka partitions revoked after their offsets were committed",
                 extra={"receiver": self.id, "partitions": _names(revoked)})

    async def _settle(self, partitions: list[_Partition], grace: float) -> None:
        """Drop the backlogs, give in-flight messages `grace` seconds to become durable, cancel the rest."""
        tasks: list[asyncio.Task[int | None]] = []
        for partition in partitions:
            partition.revoked.set()
            partition.backlog.clear()
            self._held -= partition.backlog_bytes
            partition.backlog_bytes = 0
            tasks.extend(partition.in_flight)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)
            log.warning("some Kafka messages were not durable when their partition went; the next owner reads them "
                        "again", extra={"receiver": self.id, "messages": len(late)})

    # ---- committing --------------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        interval = self.config.autocommit.interval if self.config.autocommit.enable else 0.0
        failures = 0
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if await self._commit(list(self._partitions.values()), timeout=max(self.config.session_timeout, 5.0)):
                failures = 0
            else:
                failures += 1
            await self._refresh_committed()
            pause = max(interval, backoff_delay(self.config.error_backoff, failures)) if failures else interval
            if pause:
                await asyncio.sleep(pause)

    async def _commit(self, partitions: list[_Partition], timeout: float) -> bool:
        """Commit the partitions' durable offsets; False if that failed (they stay due)."""
        if self._consumer is None:
            return True
        due = {TopicPartition(p.topic, p.partition): p for p in partitions
               if p.durable is not None and p.durable != p.committed}
        if not due:
            return True
        async with self._commit_lock:
            offsets = {tp: p.durable for tp, p in due.items()}
            try:
                await asyncio.wait_for(self._consumer.commit(offsets), timeout)
            except (KafkaError, TimeoutError) as exc:
                self._dirty.set()
                self._episode("commit", "committing Kafka offsets failed; durable data may be delivered twice", exc)
                return False
            for tp, partition in due.items():
                partition.committed = offsets[tp]
        return True

    async def _refresh_committed(self) -> None:
        """For the lag: the group's committed offset of partitions this member has not committed yet."""
        for partition in list(self._partitions.values()):
            if partition.committed is None and self._consumer is not None:
                try:
                    partition.committed = await asyncio.wait_for(self._consumer.committed(
                        TopicPartition(partition.topic, partition.partition)), 5.0)
                except (KafkaError, TimeoutError):
                    return

    # ---- telemetry ---------------------------------------------------------------------------------

    def lag_samples(self) -> list[tuple[tuple[str, ...], float]]:
        samples: list[tuple[tuple[str, ...], float]] = []
        for partition in list(self._partitions.values()):
            if self._consumer is None:
                break
            highwater = self._consumer.highwater(TopicPartition(partition.topic, partition.partition))
            if highwater is None:
                continue
            base = next((o for o in (partition.committed, partition.first) if o is not None), highwater)
            samples.append(((partition.topic, str(partition.partition), self.config.group_id),
                            float(max(0, highwater - base))))
        return samples

    def _episode(self, what: str, message: str, exc: BaseException, **fields: Any) -> None:
        """Log the first occurrence, and again only after `_QUIET` seconds without one."""
        now = time.monotonic()
        last = self._episodes.get(what)
        self._episodes[what] = now
        if last is None or now - last > _QUIET:
            log.warning(message, extra={"receiver": self.id, "error": f"{type(exc).__name__}: {exc}", **fields})

    async def _pause(self, attempt: int) -> None:
        await _wait_for(self._stopping, backoff_delay(self.config.error_backoff, attempt))


class _Listener(ConsumerRebalanceListener):
    """aiokafka's rebalance listener: its coroutines run before partitions go and after they come."""

    def __init__(self, receiver: KafkaReceiver):
        self.receiver = receiver

    async def on_partitions_revoked(self, revoked: set) -> None:
        await self.receiver.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set) -> None:
        self.receiver.assigned(assigned)


class _LagGauge:
    """The agent's one `kafka_consumer_lag` gauge; each running kafka receiver adds its partitions."""

    def __init__(self) -> None:
        self.receivers: list[KafkaReceiver] = []

    def __call__(self) -> list[tuple[tuple[str, ...], float]]:
        return [sample for receiver in list(self.receivers) for sample in receiver.lag_samples()]


def _lag_gauge(metrics: Any) -> _LagGauge:
    gauge = metrics.gauges.get(LAG)
    if gauge is None or not isinstance(gauge.read, _LagGauge):
        metrics.gauge(LAG, "Messages of a Kafka partition not yet committed by the consumer group (high watermark "
                      "minus committed offset).", ("topic", "partition", "group"), _LagGauge())
        gauge = metrics.gauges[LAG]
    return gauge.read


async def _wait_for(event: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `event` is set first; True if it was."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
        return True
    except TimeoutError:
        return event.is_set()


def _metadata(partition: _Partition, record: Any) -> dict[str, str]:
    """A message's request metadata, as otelcol's receiver gives it (what `from_context` and the
    batch processor's `metadata_keys` read): kafka.topic, kafka.partition, kafka.offset and each
    record header; keys lowercased, repeated ones joined with ';'."""
    pairs = [("kafka.topic", partition.topic), ("kafka.partition", str(partition.partition)),
             ("kafka.offset", str(record.offset))]
    pairs += [(key, (value or b"").decode("utf-8", "replace")) for key, value in record.headers or ()]
    return codec.metadata_of(pairs)


def _why_skipped(record: object) -> tuple[str, str]:
    """The episode a skipped message belongs to, and what its log line says."""
    if isinstance(record, Unreadable) and isinstance(record.error, DecompressTooLarge):
        return "too large", ("skipping Kafka record batches that decompress to more than "
                             "max_decompress_batch_bytes (raise it to read them)")
    return "malformed", "skipping Kafka messages that do not decode or could never fit"


def _names(partitions: set) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)


FACTORY = Factory("kafka", KafkaReceiverConfig, KafkaReceiver)
