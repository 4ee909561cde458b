"""Reading records through aiokafka so that a record batch no client can read costs its own records only.

Why: aiokafka decompresses and checks a record batch while `getmany` hands its records out. A
batch that fails there (a CRC that does not match, bytes that do not decompress) raises from that
call, and the records the call had already taken from other partitions are gone: their positions
moved past them, and a later durable offset commits over them. The failing batch is fetched
again and fails again, for good.

So a fetch first waits across all partitions for at most one record (the call that fails cannot
have taken another), then drains each partition on its own (a failing drain moves no position).
A partition whose drain fails is read one record at a time; an offset that fails is handed out
as an `Unreadable` entry, in its place among the records, and stepped over (seek to the next
offset), until a record reads again. The caller skips and counts it, and commits past it once
the records before it are durable, as any message that does not decode. A batch whose records
decompress to more than `max_decompress_batch_bytes` is such a batch (kafka_decompress.py).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cramjam
from aiokafka.errors import CorruptRecordException, KafkaError
from aiokafka.structs import TopicPartition

from edgeagent.receivers import kafka_decompress

# what reading a batch raises when its bytes are bad (not when the broker or the group fails)
UNREADABLE = (CorruptRecordException, OSError, EOFError, zlib.error, cramjam.DecompressionError)
_STEPS = 1000  # offsets read one by one per fetch; a larger bad batch is stepped through over several
_POSITION_TIMEOUT = 5.0


@dataclass(frozen=True)
class Unreadable:
    """An offset whose record batch cannot be read: skipped in its place among the records."""

    offset: int
    error: BaseException
    value: bytes = b""
    headers: tuple = ()


class Fetcher:
    """`await fetch(partitions, timeout, max_records)`: records by partition, never losing any."""

    def __init__(self, consumer: Any, step_wait: float, owner: Callable[[TopicPartition], object],
                 max_decompress_batch_bytes: int = kafka_decompress.DEFAULT_MAX_BYTES):
        kafka_decompress.install()
        self.consumer = consumer
        self.max_decompress_batch_bytes = max_decompress_batch_bytes
        self.owner = owner  # who holds a partition now: another after a rebalance
        self.step_wait_ms = int(step_wait * 1000)  # how long a one-record read waits for its refetch

    async def fetch(self, partitions: list[TopicPartition], timeout: float, max_records: int
                    ) -> dict[TopicPartition, tuple[object, list]]:
        """Wait up to `timeout` for a record, then take up to `max_records` of each of `partitions`;
        each partition's records with who held it when they were taken. A fetch spans several
        calls: when a rebalance comes between them, only the records of the partition's latest
        holder are handed out (the new assignment reads the earlier ones again from the committed
        offset), and those are handed out whatever the holder when the fetch began. Raises
        KafkaError only when it took nothing."""
        with kafka_decompress.limit(self.max_decompress_batch_bytes):
            return await self._fetch(partitions, timeout, max_records)

    async def _fetch(self, partitions: list[TopicPartition], timeout: float, max_records: int
                     ) -> dict[TopicPartition, tuple[object, list]]:
        """The fetch, under the bound of this fetcher's decompression."""
        out: dict[TopicPartition, tuple[object, list]] = {}

        def take(tp: TopicPartition, holder: object, records: list) -> None:
            known = out.get(tp)
            if known is not None and known[0] is holder:
                known[1].extend(records)
            elif records:
                out[tp] = (holder, list(records))

        try:
            for tp, records in (await self.consumer.getmany(timeout_ms=int(timeout * 1000), max_records=1)).items():
                take(tp, self.owner(tp), records)
        except UNREADABLE:
            pass  # the drain below finds the partition and steps over the batch
        for tp in partitions:
            holder = self.owner(tp)
            try:
                got = (await self.consumer.getmany(tp, timeout_ms=0, max_records=max_records)).get(tp, [])
            except UNREADABLE:
                got = await self._step(tp, holder)
            except KafkaError:
                if out:
                    break  # what was taken goes out now; the error comes again on the next fetch
                raise
            take(tp, self.owner(tp), got)
        return out

    async def _step(self, tp: TopicPartition, holder: object) -> list:
        """Read `tp` one record at a time, an offset that fails as `Unreadable`, until a record reads
        again after one failed (or nothing more comes within the wait)."""
        got: list = []
        stepped = False
        for _ in range(_STEPS):
            try:
                records = (await self.consumer.getmany(tp, timeout_ms=self.step_wait_ms, max_records=1)).get(tp, [])
            except UNREADABLE as exc:
                try:
                    offset = await asyncio.wait_for(self.consumer.position(tp), _POSITION_TIMEOUT)
                except (KafkaError, TimeoutError):  # revoked meanwhile, or the group is moving: later
                    break
                if self.owner(tp) is not holder:  # a rebalance: the position is the new assignment's
                    break
                self.consumer.seek(tp, offset + 1)
                got.append(Unreadable(offset, exc))
                stepped = True
                continue
            except KafkaError:
                break
            got.extend(records)
            if not records or stepped:
                break
        return got
