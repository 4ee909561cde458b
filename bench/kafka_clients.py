#!/usr/bin/env python3
"""aiokafka against confluent-kafka on the test broker (tansu), for the kafka exporter and receiver.

Method
    One tansu broker on a free loopback port (memory storage), a fresh 4-partition topic per
    measurement. For each client:

    1. produce: --messages records of 1 KiB (--value-bytes), keyed (1,000 distinct keys), acks=all; the clock
       runs from the first send to the last broker acknowledgement.
    2. consume: a new consumer group reads them all from the earliest offset, committing the
       offsets it read after every fetched batch (manual commits); the clock runs from the
       first fetched batch (after the group join) to the last record.
    3. gzip and zstd: produce and consume as above with producer compression, a quarter of
       the records; the consumer checks every value arrived intact.
    4. idempotent producer: 100 records with idempotence enabled; reports ok or the error.
    5. rebalance: consumer A joins a new group (timed until it owns all 4 partitions);
       consumer B joins; the clock runs until each owns 2 (both keep polling).

    Printed per client and step: records/s and MiB/s, or "ok"/the error and seconds.

Usage
    python bench/kafka_clients.py [--messages 50000] [--value-bytes 1024] [--only aiokafka|confluent]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.kafka import Broker  # noqa: E402

VALUE = os.urandom(1024)  # --value-bytes replaces it
KEYS = [f"key-{index}".encode() for index in range(1000)]
PARTITIONS = 4
STEP_TIMEOUT = 120.0


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:10.0f} records/s {count * len(VALUE) / seconds / 2**20:7.1f} MiB/s ({seconds:.2f} s)"


# ---- aiokafka -------------------------------------------------------------------------------------


async def aiokafka_produce(bootstrap: str, topic: str, count: int, **options) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **options)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, VALUE, key=KEYS[index % len(KEYS)]) for index in range(count)]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def aiokafka_consume(bootstrap: str, topic: str, count: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    seen = 0
    started = None
    try:
        deadline = time.monotonic() + STEP_TIMEOUT
        while seen < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if batches and started is None:
                started = time.perf_counter()
            for records in batches.values():
                seen += len(records)
                if any(record.value != VALUE for record in records):
                    raise AssertionError("a record arrived altered")
            if batches:
                await consumer.commit()
        if seen < count:
            raise AssertionError(f"only {seen} of {count} records arrived")
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def aiokafka_rebalance(bootstrap: str, topic: str) -> tuple[float, float]:
    from aiokafka import AIOKafkaConsumer

    group = f"bench-{uuid.uuid4().hex[:8]}"
    first = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    second = None
    try:
        joining = time.perf_counter()
        await first.start()
        deadline = time.monotonic() + STEP_TIMEOUT
        while len(first.assignment()) < PARTITIONS and time.monotonic() < deadline:
            await first.getmany(timeout_ms=200)
        joined = time.perf_counter() - joining
        second = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        started = time.perf_counter()
        await second.start()
        while time.monotonic() < deadline:
            await asyncio.gather(first.getmany(timeout_ms=200), second.getmany(timeout_ms=200))
            if len(first.assignment()) == len(second.assignment()) == PARTITIONS // 2:
                return joined, time.perf_counter() - started
        raise AssertionError(f"no even split: {len(first.assignment())} and {len(second.assignment())} partitions")
    finally:
        await first.stop()
        if second is not None:
            await second.stop()


def run_aiokafka(broker: Broker, count: int) -> None:
    steps = {
        "produce": lambda topic: aiokafka_produce(broker.bootstrap, topic, count),
        "consume": None,
        "gzip": lambda topic: aiokafka_produce(broker.bootstrap, topic, count // 4, compression_type="gzip"),
        "zstd": lambda topic: aiokafka_produce(broker.bootstrap, topic, count // 4, compression_type="zstd"),
        "idempotent": lambda topic: aiokafka_produce(broker.bootstrap, topic, 100, enable_idempotence=True),
    }
    report("aiokafka", broker, count, steps, lambda topic, n: asyncio.run(aiokafka_consume(broker.bootstrap, topic, n)),
           lambda topic: asyncio.run(aiokafka_rebalance(broker.bootstrap, topic)), asyncio.run)


# ---- confluent-kafka ------------------------------------------------------------------------------


def confluent_produce(bootstrap: str, topic: str, count: int, **options) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": False, **options})
    failures: list[str] = []
    acked = 0

    def delivered(error, message) -> None:
        nonlocal acked
        if error is not None:
            failures.append(str(error))
        acked += 1

    started = time.perf_counter()
    for index in range(count):
        while True:
            try:
                producer.produce(topic, VALUE, key=KEYS[index % len(KEYS)], on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(STEP_TIMEOUT)
    elapsed = time.perf_counter() - started
    if failures or remaining:
        raise AssertionError(f"{len(failures)} failed ({failures[:1]}), {remaining} not acknowledged")
    return elapsed


def confluent_consume(bootstrap: str, topic: str, count: int) -> float:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen = 0
    started = None
    try:
        deadline = time.monotonic() + STEP_TIMEOUT
        while seen < count and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=2000, timeout=1.0)
            if messages and started is None:
                started = time.perf_counter()
            for message in messages:
                if message.error() is not None:
                    raise AssertionError(str(message.error()))
                if message.value() != VALUE:
                    raise AssertionError("a record arrived altered")
            seen += len(messages)
            if messages:
                consumer.commit(asynchronous=False)
        if seen < count:
            raise AssertionError(f"only {seen} of {count} records arrived")
        return time.perf_counter() - started
    finally:
        consumer.close()


def confluent_rebalance(bootstrap: str, topic: str) -> tuple[float, float]:
    from confluent_kafka import Consumer

    settings = {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False}
    first, second = Consumer(settings), None
    try:
        joining = time.perf_counter()
        first.subscribe([topic])
        deadline = time.monotonic() + STEP_TIMEOUT
        while len(first.assignment()) < PARTITIONS and time.monotonic() < deadline:
            first.poll(0.2)
        joined = time.perf_counter() - joining
        second = Consumer(settings)
        started = time.perf_counter()
        second.subscribe([topic])
        while time.monotonic() < deadline:
            first.poll(0.1)
            second.poll(0.1)
            if len(first.assignment()) == len(second.assignment()) == PARTITIONS // 2:
                return joined, time.perf_counter() - started
        raise AssertionError(f"no even split: {len(first.assignment())} and {len(second.assignment())} partitions")
    finally:
        first.close()
        if second is not None:
            second.close()


def run_confluent(broker: Broker, count: int) -> None:
    steps = {
        "produce": lambda topic: confluent_produce(broker.bootstrap, topic, count),
        "consume": None,
        "gzip": lambda topic: confluent_produce(broker.bootstrap, topic, count // 4, **{"compression.type": "gzip"}),
        "zstd": lambda topic: confluent_produce(broker.bootstrap, topic, count // 4, **{"compression.type": "zstd"}),
        "idempotent": lambda topic: confluent_produce(broker.bootstrap, topic, 100, **{"enable.idempotence": True,
                                                                                        "message.timeout.ms": 20000}),
    }
    report("confluent-kafka", broker, count, steps, lambda topic, n: confluent_consume(broker.bootstrap, topic, n),
           lambda topic: confluent_rebalance(broker.bootstrap, topic), lambda value: value)


# ---- the common driver ---------------------------------------------------------------------------


def report(client: str, broker: Broker, count: int, steps: dict, consume, rebalance, resolve) -> None:
    """Run each step on a fresh topic and print one line for it; a failing step prints its error."""
    print(f"{client}:")
    produced_topic = None
    for name, step in steps.items():
        topic = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        try:
            if name == "consume":
                seconds = consume(produced_topic, count)
                print(f"  {name:11s}{rate(count, seconds)}")
                continue
            broker.create_topic(topic, PARTITIONS)
            seconds = resolve(step(topic))
            records = {"produce": count, "idempotent": 100}.get(name, count // 4)
            print(f"  {name:11s}{rate(records, seconds)}")
            if name in ("gzip", "zstd"):
                print(f"  {'  consume':11s}{rate(records, consume(topic, records))}, values intact")
            if name == "produce":
                produced_topic = topic
        except Exception as exc:
            print(f"  {name:11s}FAILED: {type(exc).__name__}: {str(exc)[:160]}")
    topic = f"bench-rebalance-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, PARTITIONS)
    try:
        joined, split = rebalance(topic)
        print(f"  {'rebalance':11s}first consumer owns all {PARTITIONS} partitions after {joined:.2f} s; "
              f"with a second, even split {PARTITIONS // 2}+{PARTITIONS // 2} after {split:.2f} s")
    except Exception as exc:
        print(f"  {'rebalance':11s}FAILED: {type(exc).__name__}: {str(exc)[:160]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--only", choices=("aiokafka", "confluent"), action="append")
    parser.add_argument("--value-bytes", type=int, default=1024, help="record size (the agent sends whole requests)")
    args = parser.parse_args()
    global VALUE
    VALUE = os.urandom(args.value_bytes)
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as scratch:
        broker = Broker(Path(scratch)).start()
        try:
            for name, run in (("aiokafka", run_aiokafka), ("confluent", run_confluent)):
                if not args.only or name in args.only:
                    run(broker, args.messages)
        finally:
            broker.kill()


if __name__ == "__main__":
    main()
