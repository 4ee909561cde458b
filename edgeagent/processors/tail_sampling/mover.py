"""What the tail-sampling stage does with its buffer records: read traces back, and move the decided.

`TraceMover` reads the parts of pending traces back from the records that hold them (for a
policy that reads spans, or for a kept trace), and moves decided traces: their kept spans into
the export queues and their parts out of the records, in one transaction (the invariants are in
the design note of stage.py). A move the export queues cannot take yet leaves the records and
the index as they were and is tried again next tick; one with more than a queue holds even when
empty is made in smaller moves. `SamplingStage` (stage.py) is a `TraceMover` that ingests and
decides.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from operator import itemgetter
from typing import Any

from edgeagent.errors import TooLargeForQueueError
from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from edgeagent.processors.tail_sampling.later import LaterProcessors, Pieces, by_batch_key
from edgeagent.processors.tail_sampling.quarantine import BadPart, Quarantine
from edgeagent.processors.tail_sampling.records import Move, RecordIndex, Row
from edgeagent.queue.api import Corrupt, StageStore, StageTransaction
from edgeagent.signals import Signal
from sampler.buffer import HINTS, SPANS, TIMES, Pending
from sampler.compression import compress_trace
from sampler.trace import Trace

log = logging.getLogger(__name__)
_BODY, _SPANS = itemgetter(3), itemgetter(2)  # of a Row
_Reading = tuple[dict[bytes, list[Row]], dict[bytes, bytes]]  # parts per trace, record bodies per key


class TraceMover:
    """The buffer records of one tail-sampling stage, and the moves out of them; see the module's docstring."""

    def __init__(self, component_id: str, config: TailSamplingConfig):
        self.id = component_id
        self.config = config
        self.store: StageStore | None = None
        self.table: Any = None  # the raw-traces table in the store
        self.queues: list[Any] = []
        self.index = RecordIndex()  # where the pending traces' parts are in the buffer records
        self.quarantine = Quarantine(component_id)  # records and parts that do not decode, for the next move
        self.post = LaterProcessors([])
        self._unsettled: dict[bytes, bool] = {}  # decided, raw records may remain: move them next tick
        self._stuck_since: float | None = None  # since when moves fail (export queues full): warned once

    def _running_store(self) -> StageStore:
        if self.store is None:
            raise RuntimeError(f"processors::{self.id} is not part of a running pipeline")
        return self.store

    # ---- reading back ----------------------------------------------------------------------

    async def _read(self, trace_ids: list[bytes] | dict[bytes, bool], more: Iterable[bytes] = (),
                    within: AbstractSet[bytes] | None = None, read: dict[bytes, bytes] | None = None) -> _Reading:
        """The parts of these traces as (record key, batch key, spans, bytes) per trace, and the
        bodies of the records that hold them (those among `within` only, when given) and of the
        records `more`, read in a worker thread unless in `read` (bodies this round read already).
        A record that does not decode is quarantined by the next move (its parts are lost to the
        dead-letter store)."""
        holding = self.index.keys_of(trace_ids)
        if within is not None:
            holding &= within
        keys = holding.union(more)
        bodies = {key: read[key] for key in keys if key in read} if read else {}
        keys.difference_update(bodies)
        if keys:
            found, corrupt = await asyncio.to_thread(self._running_store().read_records, self.table, sorted(keys))
            for key, stored in found.items():
                if self.index.fits(key, stored.body):
                    bodies[key] = stored.body
                else:  # not the record the index knows: keep it whole
                    corrupt.append(Corrupt(key, "buffer record does not match its index"))
            self.quarantine.note_records({bad.key: bad.reason for bad in corrupt})
        return self.index.rows(bodies, set(trace_ids)), bodies

    def _trace_of(self, trace_id: bytes, rows: list[Row], buffered: Pending | None = None) -> Trace:
        """The trace of its parts, parsed only when a policy (or keeping it) asks for its spans.
        `buffered`: what the buffer knew of its spans as they arrived; its times and hints hold
        only when every one of those spans was read back (none was in a record quarantined since)."""
        raw = list(map(_BODY, rows))
        spans = sum(map(_SPANS, rows))
        whole = buffered is not None and buffered[SPANS] == spans
        return Trace(trace_id, span_count=spans, size_bytes=sum(map(len, raw)),
                     raw=raw, parse=functools.partial(self.quarantine.batches_of, trace_id, rows),
                     times=buffered[TIMES] if buffered is not None and whole else None,
                     hints=buffered[HINTS] if buffered is not None and whole else None)

    # ---- moving ----------------------------------------------------------------------------

    def _kept_traces(self, traces: list[Trace], rows: dict[bytes, list[Row]]) -> dict[bytes, Pieces]:
        """Of kept traces that were read, those that go out as parsed here (span compression or
        later processors), in pieces by batch key; the others go out as stored. Each is parsed now
        (kept traces not read when they are: LaterProcessors.exports), so a record that does not
        parse is quarantined, not sent."""
        kept: dict[bytes, Pieces] = {}
        compression = self.config.span_compression
        for trace in traces:
            trace.batches  # noqa: B018 (parses the records, noting those that do not parse)
            if compression.enabled or self.post:
                pieces = by_batch_key(trace, rows.get(trace.trace_id, []), self.quarantine)
                if compression.enabled:
                    for _, piece in pieces:
                        compress_trace(piece, compression)
                kept[trace.trace_id] = pieces
        return kept

    async def _settle(self, decisions: dict[bytes, bool], reading: _Reading | None,
                      kept: dict[bytes, Pieces] | None = None, checked: AbstractSet[bytes] = frozenset(),
                      touched: set[bytes] | None = None) -> None:
        """Move decided traces: kept spans into the export queues and their parts out of the
        buffer records, in one transaction. `reading`: the parts of the kept traces and the
        bodies of the records that keep pending parts (None: read them now). `kept`: kept
        traces parsed for the decision that go out as parsed; `checked`: traces whose parts
        were parsed for the decision (a part that does not parse was noted then). `touched`:
        the records that held the traces' parts when they were read (None: those that do now)."""
        if touched is None:
            touched = self.index.keys_of(decisions)
        if reading is None:
            reading = await self._read(decisions, within=touched)
        rows, bodies = reading
        exports = self.post.exports(decisions, rows, kept or {}, checked, self.quarantine)
        move = self.index.plan(decisions, bodies, touched)
        # the writer thread gets its own copies: these belong to the event loop
        corrupt, bad_parts = self.quarantine.snapshot()
        try:
            await self._running_store().atomic(lambda writer: self._move(writer, move, exports, corrupt, bad_parts))
        except Exception as exc:  # export queues full, disk full: the records stay; try again later
            if isinstance(exc, TooLargeForQueueError) or len(decisions) > 1 and self._never_fits(exports):
                await self._settle_smaller(decisions, reading, kept, checked, touched, exc)
                return
            if self._stuck_since is None:  # once per episode: it is tried again every tick
                self._stuck_since = time.monotonic()
                log.warning("tail sampling could not queue decided traces yet; retrying", extra={
                    "processor": self.id, "traces": len(decisions), "error": str(exc)})
            self._unsettled.update(decisions)
            return
        if self._stuck_since is not None:
            log.info("tail sampling queues decided traces again", extra={
                "processor": self.id, "after_seconds": round(time.monotonic() - self._stuck_since, 1)})
            self._stuck_since = None
        self.index.apply(move, decisions)
        for key in corrupt:
            self.index.forget(key)
        self.quarantine.moved(corrupt, bad_parts)

    def _never_fits(self, exports: list[tuple[bytes, int, bytes]]) -> bool:
        """Whether a move's kept spans are more than some export queue holds even when empty (bodies
        counted as sent: stored compressed they may fit, and are then only moved in parts)."""
        items, size = sum(map(itemgetter(1), exports)), sum(len(body) for body, _, _ in exports)
        return any(queue.capacity.never_holds(len(exports), items, size) for queue in self.queues)

    async def _settle_smaller(self, decisions: dict[bytes, bool], reading: _Reading, kept: dict[bytes, Pieces] | None,
                              checked: AbstractSet[bytes], touched: set[bytes], exc: Exception) -> None:
        """A move keeps more than an export queue holds even when empty, so waiting never lets it
        in: the first half of its traces is moved now, in smaller moves as needed, and the rest
        next tick (read again then: this move rewrites their records). A kept trace more than
        the queue holds on its own (TooLargeForQueueError) can never be queued: it is dropped,
        and said so."""
        if len(decisions) == 1:
            trace_id = next(iter(decisions))
            log.error("tail sampling dropped a kept trace: it is more than its export queue holds even when "
                      "empty; raise the exporter's sending_queue::queue_size", extra={
                          "processor": self.id, "trace_id": trace_id.hex(), "error": str(exc)})
            await self._settle({trace_id: False}, None)
            return
        ids = list(decisions)
        half = len(ids) // 2
        self._unsettled.update((trace_id, decisions[trace_id]) for trace_id in ids[half:])
        await self._settle({trace_id: decisions[trace_id] for trace_id in ids[:half]}, reading, kept, checked, touched)

    def _move(self, writer: StageTransaction, move: Move, exports: list[tuple[bytes, int, bytes]],
              corrupt: dict[bytes, str], bad_parts: dict[bytes, BadPart]) -> None:
        """Runs on the writer thread, inside one transaction."""
        for key in move.deletes:
            if key not in corrupt:
                writer.delete(self.table, key)
        for key, (body, spans, batch_key, _) in move.rewrites.items():
            if key not in corrupt:
                writer.put(self.table, key, Signal.TRACES, body, spans, batch_key, compress=False)
        Quarantine.write(writer, self.table, corrupt, bad_parts)
        for body, items, batch_key in exports:
            for queue in self.queues:
                writer.append(queue, body, items, batch_key)
