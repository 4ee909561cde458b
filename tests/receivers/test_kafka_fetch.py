"""The kafka receiver's Fetcher against a real broker (tansu) holding a record batch no client can read."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer

from edgeagent.receivers.kafka_fetch import Fetcher, Unreadable

pytestmark = pytest.mark.e2e  # runs a broker

TOPIC = "otlp_spans"


def _topic(kafka) -> None:
    """Partition 0: offsets 0-2 readable, 3-5 one batch that is not, 6-7 readable; partition 1: 0-3 readable."""
    kafka.create_topic(TOPIC, 2)
    kafka.produce(TOPIC, [b"a0", b"a1", b"a2"], partition=0)
    kafka.produce_undecodable(TOPIC, [b"bad3", b"bad4", b"bad5"], partition=0)
    kafka.produce(TOPIC, [b"a6", b"a7"], partition=0)
    kafka.produce(TOPIC, [b"b0", b"b1", b"b2", b"b3"], partition=1)


async def _read(kafka, owner, expected: int, seconds: float = 30.0,
                holders: list | None = None) -> dict[int, list[tuple[int, bytes | None]]]:
    """What fetches hand out by partition, as (offset, value; None for Unreadable), until `expected`
    entries; the holder each partition's records were handed out with, appended to `holders`."""
    holders = [] if holders is None else holders
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=kafka.bootstrap, group_id="test", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        fetcher = Fetcher(consumer, step_wait=1.0, owner=owner)
        out: dict[int, list[tuple[int, bytes | None]]] = {0: [], 1: []}
        deadline = time.monotonic() + seconds
        while sum(map(len, out.values())) < expected and time.monotonic() < deadline:
            got = await fetcher.fetch(sorted(consumer.assignment()), timeout=0.5, max_records=256)
            for tp, (holder, records) in got.items():
                holders.append(holder)
                out[tp.partition] += [(r.offset, None if isinstance(r, Unreadable) else r.value) for r in records]
        return out
    finally:
        await consumer.stop()


def test_a_batch_that_cannot_be_read_is_handed_out_in_place_and_no_other_record_is_lost(kafka):
    _topic(kafka)
    out = asyncio.run(_read(kafka, owner=lambda tp: "this member", expected=12))
    assert out == {0: [(0, b"a0"), (1, b"a1"), (2, b"a2"), (3, None), (4, None), (5, None), (6, b"a6"), (7, b"a7")],
                   1: [(0, b"b0"), (1, b"b1"), (2, b"b2"), (3, b"b3")]}


def test_a_partition_that_changes_hands_while_stepping_is_not_stepped_over(kafka):
    _topic(kafka)
    turns = iter(range(1_000_000))
    # every look at the owner finds another: as if each read crossed a rebalance
    out = asyncio.run(_read(kafka, owner=lambda tp: next(turns), expected=99, seconds=6.0))
    assert not [offset for offset, value in out[0] if value is None]  # nothing skipped without a holder
    # and nothing past the batch read (records a holder took before the next one are not handed
    # out: a real rebalance reads them again from the committed offset)
    assert out[0] and all(offset < 3 for offset, _ in out[0])
    values = [value for _, value in out[1]]
    assert values and values == [b"b0", b"b1", b"b2", b"b3"][-len(values):]  # in order, none skipped


def test_records_taken_after_a_rebalance_in_one_fetch_are_handed_out_with_the_new_holder(kafka):
    """A fetch waits, then drains each partition: when the partition changes hands between the two
    (a rebalance during the wait), the records drained are the new holder's and go out as its;
    before, the holder from before the fetch was compared, and they were dropped unread again."""
    kafka.create_topic(TOPIC, 2)
    kafka.produce(TOPIC, [b"a0", b"a1", b"a2"], partition=0)
    kafka.produce(TOPIC, [b"b0", b"b1", b"b2", b"b3"], partition=1)
    looks = iter(range(1_000_000))
    holders: list = []
    # the first look (the wait's record) finds the old holder; every later look the new one
    asyncio.run(_read(kafka, owner=lambda tp: "old" if next(looks) == 0 else "new", expected=6, seconds=6.0,
                      holders=holders))
    assert holders and set(holders) == {"new"}, holders
