"""The rebalance timeout the kafka receiver's consumer asks of the group, as a real broker (tansu) sees
it in the JoinGroup request: otelcol's client (franz-go) asks 60 s, aiokafka alone would ask
session_timeout, shorter than a revoke may take (settling in-flight messages, then committing)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from aiokafka import AIOKafkaConsumer

from edgeagent.receivers.kafka import KafkaReceiverConfig
from tests.helpers.kafka import Broker

pytestmark = pytest.mark.e2e  # runs a broker

TOPIC = "otlp_spans"
_JOIN = re.compile(r"JoinGroupRequest \{ group_id: \"(?P<group>[^\"]+)\", session_timeout_ms: (?P<session>\d+), "
                   r"rebalance_timeout_ms: Some\((?P<rebalance>\d+)\)")


@pytest.fixture
def logging_kafka(tmp_path, monkeypatch):
    """A tansu broker that logs every request it decodes (the JoinGroup's timeouts among them)."""
    monkeypatch.setenv("RUST_LOG", "tansu_sans_io=debug")
    broker = Broker(tmp_path / "kafka").start()
    broker.create_topic(TOPIC)
    yield broker
    broker.kill()


def _joined(kafka: Broker, config: KafkaReceiverConfig) -> tuple[int, int]:
    """(session, rebalance) timeouts in ms of the group join of a consumer built as the receiver builds it."""
    async def join() -> None:
        consumer = AIOKafkaConsumer(**config.consumer_options())
        consumer.subscribe([TOPIC])
        await consumer.start()
        try:
            deadline = time.monotonic() + 20
            while not consumer.assignment() and time.monotonic() < deadline:
                await consumer.getmany(timeout_ms=200)
            assert consumer.assignment(), "no partition assigned within 20 s"
        finally:
            await consumer.stop()
    asyncio.run(join())
    log = (kafka.workdir / "tansu.log").read_text(errors="replace")
    joins = {(int(m["session"]), int(m["rebalance"])) for m in _JOIN.finditer(re.sub(r"\x1b\[[0-9;]*m", "", log))
             if m["group"] == config.group_id}
    assert len(joins) == 1, joins
    return joins.pop()


def test_the_consumer_asks_the_group_for_franz_gos_rebalance_timeout(logging_kafka):
    config = KafkaReceiverConfig(brokers=[logging_kafka.bootstrap], group_id="hub-default")
    assert _joined(logging_kafka, config) == (10_000, 60_000)


def test_a_session_timeout_past_a_minute_keeps_the_rebalance_timeout_above_a_revoke():
    """A revoke may take session_timeout and a second (kafka.py, revoked): a member still revoking when
    the rebalance timeout passes is dropped from the group, its commit refused. (Checked on the
    consumer's options: the broker under test keeps rejoining a member whose session is that long.)"""
    config = KafkaReceiverConfig(session_timeout="90s", heartbeat_interval="20s")
    options = config.consumer_options()
    assert options["session_timeout_ms"] == 90_000 and options["rebalance_timeout_ms"] == 95_000
    assert KafkaReceiverConfig(session_timeout="55s").consumer_options()["rebalance_timeout_ms"] == 60_000
