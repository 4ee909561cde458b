"""The kafka receiver's Fetcher against a real broker (tansu) holding a record batch no client can read."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from aiokafka import AIOKafkaConsumer

from edgeagent.receivers.kafka_decompress import DecompressTooLarge
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


async def _read(kafka, owner, expected: int, seconds: float = 30.0, holders: list | None = None,
                errors: list | None = None, **options) -> dict[int, list[tuple[int, bytes | None]]]:
    """What fetches hand out by partition, as (offset, value; None for Unreadable), until `expected`
    entries; the holder each partition's records were handed out with, appended to `holders`, and
    each Unreadable's error to `errors`. `options`: the Fetcher's."""
    holders = [] if holders is None else holders
    errors = [] if errors is None else errors
    # in a group of its own: tansu holds a first join for about half the session timeout (5 s at
    # aiokafka's default of 10 s), 1 s at 2 s
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=kafka.bootstrap, group_id="test", enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=2000, heartbeat_interval_ms=500)
    await consumer.start()
    try:
        fetcher = Fetcher(consumer, step_wait=1.0, owner=owner, **options)
        out: dict[int, list[tuple[int, bytes | None]]] = {0: [], 1: []}
        deadline = time.monotonic() + seconds
        while sum(map(len, out.values())) < expected and time.monotonic() < deadline:
            got = await fetcher.fetch(sorted(consumer.assignment()), timeout=0.5, max_records=256)
            for tp, (holder, records) in got.items():
                holders.append(holder)
                out[tp.partition] += [(r.offset, None if isinstance(r, Unreadable) else r.value) for r in records]
                errors += [r.error for r in records if isinstance(r, Unreadable)]
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
    out = asyncio.run(_read(kafka, owner=lambda tp: next(turns), expected=99, seconds=3.0))
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


MiB = 1 << 20
# what each codec's bomb expands to: zstd and gzip take about 32 KB and 520 KB for these, lz4 (about
# 240:1 at most) 560 KB; snappy (about 21:1) makes no bomb within a fetch, only a batch past the bound
BOMBS = {"gzip": 512 * MiB, "zstd": 1024 * MiB, "lz4": 128 * MiB, "snappy": 16 * MiB}


def _memory(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1)) << 10


@pytest.mark.parametrize("codec", list(BOMBS))
def test_a_batch_expanding_past_the_bound_is_stepped_over_and_never_inflated_whole(kafka, codec):
    """A few hundred KB of compressed zeros in one batch: before, aiokafka inflated all of it (up to
    a GiB here, and again for each offset stepped over); now it stops at max_decompress_batch_bytes.
    The compressed batches under the bound on either side of it are read as ever."""
    kafka.create_topic(TOPIC, 1)
    padding = bytes(250 << 10)  # three of them, with the records' framing: under the bound of 1 MiB
    kafka.produce(TOPIC, [b"a0" + padding, b"a1" + padding, b"a2" + padding], partition=0, compression=codec)
    kafka.produce_bomb(TOPIC, [bytes(300 << 10)] * 3, partition=0, codec=codec, expanded=BOMBS[codec])
    kafka.produce(TOPIC, [b"a6", b"a7"], partition=0, compression=codec)
    errors: list = []
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak (VmHWM) starts again from what the process holds now
    before = _memory("VmRSS")
    out = asyncio.run(_read(kafka, owner=lambda tp: "this member", expected=8, errors=errors,
                            max_decompress_batch_bytes=MiB))
    growth = _memory("VmHWM") - before
    assert [(offset, value and value[:2]) for offset, value in out[0]] == \
        [(0, b"a0"), (1, b"a1"), (2, b"a2"), (3, None), (4, None), (5, None), (6, b"a6"), (7, b"a7")]
    assert growth < 32 * MiB, f"reading grew the process by {growth / MiB:.0f} MiB"
    assert len(errors) == 3 and all(isinstance(error, DecompressTooLarge) for error in errors), errors
    assert "max_decompress_batch_bytes" in str(errors[0])
