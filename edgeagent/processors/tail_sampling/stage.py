"""The tail-sampling stage: a durable trace buffer, decisions, and the atomic move to export.

This module ingests and decides; reading traces back from the buffer records and the move are
mover.py's (`TraceMover`, which the stage extends). The design note covers both.

Design note
===========
Invariants
* A client's spans are acknowledged only once each is durable somewhere: in the raw-traces
  sub-database (its trace is pending), in the export queues (its trace was already kept), or
  counted as dropped (its trace was already dropped).
* A trace's spans leave the raw-traces sub-database only in the LMDB transaction that appends
  its kept spans to the export queues (or that just removes them, when it is dropped). A kill -9
  at any moment leaves every span pending or exported: never both, never neither.

Key layout: sub-database `raw:<processor id>` in the store of the pipeline's export queues;
one record per received request: key = sequence (8 bytes, big-endian); value = a queue record
(edgeagent.queue.record: item count, enqueue time, batch key; body not compressed: it is read
once, seconds later) holding the request's spans of pending traces cut by trace (sampler.split)
and concatenated: each part an ExportTraceServiceRequest of one trace's spans, resource and
scope intact, so the whole is one too. A move deletes a record whose traces are all decided, and
rewrites one that still holds pending parts with just those, in the same transaction
(records.py: why one record per request, and the index). Records of earlier releases (one per
trace part, key = trace id + sequence) are read the same way.

Memory holds metadata only (sampler.buffer, records.RecordIndex: each record's parts as trace
id, length and span count): a buffered span costs tens of bytes, and a restart loses nothing.
On start every record is read and cut again, and every trace in them is pending again, its
first-seen time taken from its oldest record, so traces whose decision_wait passed while the
agent was down are decided at once (a record rewritten by a move carries the time of that
move). Decision caches live in memory: after a restart a late span of a trace decided before
it starts a new trace, as in otelcol.

With `shared_state` (hub replicas, sampler.cluster), decisions are also kept in Redis: ingest asks
it once per request about the traces this replica neither buffers nor remembers, before routing;
deciding follows a decision another replica made first, and publishes its own.

Races, all on one event loop and one writer thread (FIFO):
* A record is indexed once its commit returned, so a move never sees half of one. While a trace
  is being decided (from the moment its round takes it out of the buffer: read, evaluated,
  moved), its new spans go to a new record and that trace is settled again by the next round; a
  round reads and moves only the records that held its traces when it began, so it never
  deletes such a record unexported. A trace evicted early is pending the same way until the
  round that decides it (with every record indexed for it). A request routed while its trace
  was being decided or evicted looks it up again once its record is committed: the decision
  may have been recorded before the request was routed. Once decided (cache), later spans go
  straight to export or are dropped.
* A move that cannot be committed (export queues full with `block`) keeps the records and the
  index as they were; the decision is retried on the next tick.
* A record that does not decode, or a part of one that does not parse, is quarantined by the
  next move (quarantine.py), never sent. The stage reaches its table only through the queue's
  API (edgeagent.queue.api).

Processors listed after tail_sampling run on kept traces before they are queued for export
(request metadata is not kept in the buffer; the batch key of metadata_keys is).

Cost per span (bench/tail_sampling_vs_otelcol.py): parts are cut out of the received bytes
(sampler.split), not rebuilt as messages; one put per request and one delete per request
decided; without later processors or span compression a kept trace's parts, concatenated, are
its export body, never re-serialized. As spans arrive, the split also reads what policies
judge traces by without their spans (sampler.split.Facts: latency's earliest start and latest
end, the places where status_code or an attribute policy may find a match, each checked by
parsing the one span it lies in, so a trace is known to match or not), and the buffer keeps it
per trace. A trace is read back from its records only when a policy may read its
spans (sampler.policies.reads_bytes) or it is kept, and parsed only when a policy reads its
spans or it is kept (sampler.trace); a record whose traces are all decided is deleted unread.
Deciding runs in rounds of many traces (policy by policy over runs of at most 64 traces read
back and any number decided unread, one move transaction a round) and rounds follow each other
while traces are due, so decisions keep up with ingest. A round's bookkeeping works on whole
lists in C where it can (the buffer's due prefix, the records it touches, the decisions, the
index update), so what stays per trace in Python is mostly the policies' own work.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import operator
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any, cast

from edgeagent.errors import RetryableError
from edgeagent.processors.memory_limiter import anonymous_memory
from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from edgeagent.processors.tail_sampling.later import LaterProcessors, Pieces
from edgeagent.processors.tail_sampling.mover import TraceMover
from edgeagent.processors.tail_sampling.reads import chunks, known_traces, policy_readers
from edgeagent.processors.tail_sampling.recovery import KEY, Rewrite, recover
from edgeagent.processors.tail_sampling.telemetry import StageTelemetry
from edgeagent.queue.api import StageStore, StageTransaction
from edgeagent.runtime import suspensions
from edgeagent.signals import Payload, Signal
from sampler.buffer import (
    DecisionCache,
    Pending,
    Timing,
    TraceBuffer,
)
from sampler.policies import build_policies, byte_hints, decide_many, reads_span_times
from sampler.relief import StressRelief
from sampler.sizing import trace_sizes
from sampler.split import Facts, TracePart, split_body
from sampler.telemetry import NO_METRICS, MetricsSink
from sampler.trace import Decision, SpansNotRead, Trace

log = logging.getLogger(__name__)
_IS_SAMPLED = functools.partial(operator.is_, Decision.SAMPLED)
_TRACE_ID = itemgetter(0)  # of a TracePart
_MAX_ROUNDS_PER_TICK = 1000  # bounded: the buffer cannot grow faster than rounds drain it
_STOP_WAIT = 5.0  # seconds shutdown waits for the round under way before it cancels it


class SamplingStage(TraceMover):
    """The `tail_sampling` processor. The pipeline attaches it to its export queues and hands it
    every request that passed the processors before it (`ingest`)."""

    def __init__(self, component_id: str, config: TailSamplingConfig, host: Any,
                 clock: Callable[[], float] = suspensions.running_time):
        super().__init__(component_id, config)
        self.host = host
        self.clock = clock
        self.policies = build_policies(config.policies, clock)
        # what the split reads of each trace as its spans arrive, for the policies (sampler.split.Facts)
        self._times = reads_span_times(self.policies)
        self._finders, self._confirms = byte_hints(self.policies)
        # whether every trace is read back for its decision: with span compression or processors
        # after tail_sampling a kept trace is parsed in the round; else only traces a policy reads
        self._read_all = config.span_compression.enabled
        self.buffer = TraceBuffer(Timing(config.decision_wait, config.decision_wait_after_root_received,
                                         config.inactivity_timeout, config.max_trace_duration))
        self.cache = DecisionCache(config.decision_cache.sampled_cache_size or config.num_traces,
                                   config.decision_cache.non_sampled_cache_size or config.num_traces)
        self.relief = StressRelief(config.stress_relief, config.num_traces, config.max_buffered_spans, clock,
                                   anonymous_memory, component_id)
        self._seq = 0
        self._early: dict[bytes, None] = {}  # evicted by the limits: decide on the next tick (ordered set)
        self._deciding: set[bytes] = set()  # read for evaluation right now: new spans go to disk
        self._late_records: set[bytes] = set()  # records committed while their trace was being decided
        self._task: asyncio.Task | None = None
        self._stopping = False  # shutdown: the round under way finishes, no other starts
        self._closed = False  # shut down: requests are refused (a reload's next stage takes them)
        self._commits: set[asyncio.Future[None]] = set()  # buffer records submitted, not yet committed
        self._wake = asyncio.Event()
        self._room = asyncio.Event()  # set while the buffer holds fewer than num_traces (block_on_overflow)
        self._room.set()
        wait = min(config.decision_wait, config.inactivity_timeout or config.decision_wait)
        self.tick = min(1.0, max(0.05, wait / 10))
        self.metrics: MetricsSink = getattr(host, "metrics", None) or NO_METRICS
        self.telemetry = StageTelemetry(component_id, self.metrics, self)
        self._count = self.telemetry.count
        self.shared = self._shared_decisions()  # None unless shared_state is configured

    # ---- wiring ----------------------------------------------------------------------------

    def attach(self, store: StageStore, queues: list[Any], post_processors: list[Any]) -> None:
        self.store = store
        self.queues = queues
        self.post = LaterProcessors(post_processors)
        self._read_all = self._read_all or bool(post_processors)
        self.table = store.table(f"raw:{self.id}")

    def process(self, payload: Payload) -> Payload:
        raise TypeError("tail_sampling is not a plain processor: the pipeline calls ingest()")

    def gauges(self) -> tuple[int, int, bool]:
        """num_traces, buffered spans, whether stress relief is on (telemetry.StageTelemetry)."""
        return self.config.num_traces, self.buffer.spans, self.relief.active

    def pending_traces(self) -> int:
        """Traces not yet decided, or decided but not yet moved to the export queues."""
        return len(self.buffer) + len(self._early) + len(self._deciding) + len(self._unsettled)

    def health(self) -> dict[str, Any]:
        health = {"buffered_traces": len(self.buffer), "buffered_spans": self.buffer.spans,
                  "stress_relief": self.relief.active, "unsettled_decisions": len(self._unsettled)}
        if self.shared is not None:
            health["shared_state"] = self.shared.health()
        return health

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.store is None:  # not part of a running pipeline: nothing to decide
            return
        if self.shared is not None:
            await self.shared.start()
        store, measure = self.store, bool(self.config.maximum_trace_size_bytes)
        recovered, corrupt, rewrites, self._seq = await asyncio.to_thread(
            lambda: recover(store.scan(self.table, bodies=True), self.index, self._facts, measure))
        if corrupt or rewrites:
            self.quarantine.note_records(corrupt)
            await self.store.atomic(lambda writer: self._repair(writer, corrupt, rewrites))
            self.quarantine.records.clear()
        now, wall = self.clock(), time.time()
        for trace_id, (spans, size, first_ms, times, hints) in recovered.items():  # pending again
            self.buffer.add(trace_id, spans, size, False, now, first=now - max(0.0, wall - first_ms / 1000),
                            times=times, hints=hints)
        if recovered:
            log.info("tail sampling resumed the traces it was holding", extra={
                "processor": self.id, "traces": len(recovered), "spans": self.buffer.spans})
        self._stopping = self._closed = False
        self._task = asyncio.create_task(self._run(), name=f"tail_sampling:{self.id}")
        self._task.add_done_callback(self._stopped)

    async def shutdown(self) -> None:
        """Pending traces stay on disk and are decided after the next start, unless
        drop_pending_traces_on_shutdown says to drop them (counted). Requests that come after are
        refused: on a reload, receivers kept running hand them here until the next stage starts,
        and that stage reads the buffer back once, when it starts; so shutdown also returns only
        once the records of the requests accepted before are committed."""
        self._closed = True
        self._room.set()  # a request waiting for room is refused now
        task, self._task = self._task, None
        if task is not None:  # before any await: no round starts after this, even if this call is cancelled
            self._stopping = True
            self._wake.set()
        if self._commits:
            await asyncio.wait(set(self._commits), timeout=_STOP_WAIT)
        if task is not None:
            # a round cancelled half way leaves its traces out of the buffer, and its move (which
            # the writer commits anyway) out of the index: let it finish
            if not (await asyncio.wait({task}, timeout=_STOP_WAIT))[0]:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if self.config.drop_pending_traces_on_shutdown:
                await self._drop_pending()
        if self.shared is not None:  # after the last decision: it sends what waits
            await self.shared.shutdown()

    async def _drop_pending(self) -> None:
        pending = list(self.buffer.traces) + list(self._early)
        self._early = {}
        for trace_id in pending:
            self.buffer.remove(trace_id)
            self.cache.record(trace_id, False)
        decisions = dict.fromkeys(pending, False) | self._unsettled
        self._unsettled = {}
        if decisions:
            await self._settle(decisions, None)
            self._count("edgeagent_sampler_dropped_on_shutdown", len(pending))
            log.info("tail sampling dropped its pending traces at shutdown",
                     extra={"processor": self.id, "traces": len(pending)})

    def _stopped(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("tail sampling stopped deciding", exc_info=task.exception(), extra={"processor": self.id})
            stopped = getattr(self.host, "component_stopped", None)  # the in-process benches' host has none
            if stopped is not None:
                stopped(f"processors::{self.id}", str(task.exception()))

    def _repair(self, writer: StageTransaction, corrupt: dict[bytes, str],
                rewrites: dict[bytes, Rewrite]) -> None:
        for key, reason in corrupt.items():
            writer.quarantine(self.table, key, reason)
        for key, (body, items, batch_key) in rewrites.items():
            writer.put(self.table, key, Signal.TRACES, body, items, batch_key, compress=False)

    # ---- ingest ----------------------------------------------------------------------------

    async def ingest(self, payload: Payload, batch_key: bytes = b"") -> None:
        """Returns once every span of the request is durable (pending, exported) or counted dropped."""
        self._refuse_when_closed()
        if self.config.block_on_overflow and len(self.buffer) >= self.config.num_traces:
            await self._wait_for_room()
        message = payload.view()
        # whether a part holds a root span matters only to decision_wait_after_root_received
        roots = bool(self.config.decision_wait_after_root_received)
        facts = self._facts()
        raw = payload.serialized()
        body, parts = split_body(raw, message, roots=roots, facts=facts)
        # bytes as otelcol counts them, for maximum_trace_size_bytes, their only reader (None: lengths stand in)
        sizes = trace_sizes(message, raw) if self.config.maximum_trace_size_bytes else None
        remote: dict[bytes, bool] = {}
        if self.shared is not None and self.shared.up:  # the one await, before routing starts
            remote = await self._shared_lookup(parts)
        self._refuse_when_closed()  # the last await before the submit
        now = self.clock()
        self.relief.update(len(self.buffer), self.buffer.spans)
        pending, pending_at, kept, kept_items = self._route(body, parts, remote)
        # a trace being decided or evicted now may be decided before the commit returns, whatever
        # the cache's version says then (its decision may be recorded already)
        busy = bool(self._deciding or self._early) and not (self._deciding.isdisjoint(map(_TRACE_ID, pending))
                                                            and self._early.keys().isdisjoint(map(_TRACE_ID, pending)))
        export = self.post.late(kept, kept_items) if kept else None
        decisions_seen = self.cache.version
        key = self._next_key() if pending else b""
        if pending_at is not None:  # some parts are not pending: the record holds the others
            body = b"".join([body[at:at + length] for (_, length, _, _), at in zip(pending, pending_at, strict=True)])
        spans = sum(items for _, _, items, _ in pending)
        queues = self.queues

        def commit(writer: StageTransaction) -> None:
            if pending:
                # buffered for seconds, read once: zstd would cost more CPU than the disk it saves
                writer.put(self.table, key, Signal.TRACES, body, spans, batch_key, compress=False)
            if export is not None:
                for queue in queues:
                    writer.append(queue, export[0], export[1], batch_key)

        def held(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._hold(key, batch_key, pending, now, facts, self.cache.version != decisions_seen or busy, sizes)
                self._enforce_limits(pending)

        # nothing awaited between routing and this submit: the writer sees the routing's order
        committed = self._running_store().atomic(commit)
        self._commits.add(committed)
        committed.add_done_callback(self._commits.discard)
        if not pending:
            await committed
            self._enforce_limits(pending)
            return
        # indexed once committed, also when this request is cancelled meanwhile (a client's
        # deadline, a reset stream): the writer commits it anyway
        committed.add_done_callback(held)
        await asyncio.shield(committed)

    def _refuse_when_closed(self) -> None:
        if self._closed:
            raise RetryableError(f"processors::{self.id} is stopping (a reload or shutdown); offer the request "
                                 f"again", retry_after=1.0)

    def _route(self, body: bytes, parts: list[TracePart], remote: dict[bytes, bool]
               ) -> tuple[list[TracePart], list[int] | None, list[bytes], int]:
        """The parts of pending traces (buffered, being decided, evicted early or not known) and where each starts
        in `body` (None: they are all the parts), and the bytes of the kept parts of traces
        decided already, with their span count (the dropped ones are counted). A split gives one
        part per trace."""
        buffered, deciding, early = self.buffer.traces, self._deciding, self._early  # tested in C
        answers: dict[bytes, bool | None] | None = None
        if not remote and not self.relief.active:  # no decision is recorded while routing: look up at once
            trace_ids = list(map(_TRACE_ID, parts))
            fresh = (trace_ids if buffered.keys().isdisjoint(trace_ids) and deciding.isdisjoint(trace_ids)
                     and early.keys().isdisjoint(trace_ids)
                     else [trace_id for trace_id in trace_ids
                           if trace_id not in buffered and trace_id not in deciding and trace_id not in early])
            known_of = self.cache.lookup_many(fresh)
            if fresh is trace_ids and known_of.count(None) == len(known_of):  # the common case: all new
                return parts, None, [], 0
            answers = dict(zip(fresh, known_of, strict=True))
        pending: list[TracePart] = []
        pending_at: list[int] = []
        kept: list[bytes] = []
        kept_items = 0
        starts = itertools.accumulate([length for _, length, _, _ in parts], initial=0)
        for part, at in zip(parts, starts, strict=False):  # starts has one more: where the last part ends
            trace_id, length, items, _ = part
            if trace_id in buffered or trace_id in deciding or trace_id in early:
                pending.append(part)
                pending_at.append(at)
                continue
            known = answers[trace_id] if answers is not None else self.cache.lookup(trace_id)
            if known is None and trace_id in remote:  # decided by another replica: follow it
                known = remote[trace_id]
                self.cache.record(trace_id, known)
            if known is None and self.relief.active:
                known = self.relief.keep(trace_id)
                self.cache.record(trace_id, known)
                self._count("edgeagent_sampler_stress_relief_traces", 1, str(known).lower())
                if self.shared is not None:
                    self.shared.publish({trace_id: known})
            elif known is not None:
                self._count("otelcol_processor_tail_sampling_sampling_late_spans", items, str(known).lower())
            if known is None:
                pending.append(part)
                pending_at.append(at)
            elif known:
                kept.append(body[at:at + length])
                kept_items += items
        return pending, (None if len(pending) == len(parts) else pending_at), kept, kept_items

    def _hold(self, key: bytes, batch_key: bytes, pending: list[TracePart], now: float, facts: Facts,
              decided_since: bool, counted: dict[bytes, int] | None) -> None:
        """Once the record `key` of these parts is committed: index it and buffer its traces, but
        for those being decided (settled again by the next round) or decided meanwhile (settled
        by the next tick). `decided_since`: whether the cache recorded decisions since routing
        (else no lookup can answer otherwise than routing's). `counted`: the traces' sizes, if measured."""
        trace_ids, sizes, items, roots = zip(*pending, strict=True)
        self.index.add_columns(key, batch_key, trace_ids, sizes, items)
        held = self._held(trace_ids, decided_since)
        if held is not None:
            trace_ids, sizes, items, roots = (tuple(itertools.compress(column, held))
                                              for column in (trace_ids, sizes, items, roots))
        new_traces = len(trace_ids) - len(self.buffer.traces.keys() & trace_ids)
        unknown = (None,) * len(trace_ids)  # no policy reads them
        if counted is not None:
            sizes = tuple(map(counted.__getitem__, trace_ids))
        self.buffer.add_many(trace_ids, items, sizes, roots, now,
                             tuple(map(facts.times.get, trace_ids)) if facts.times else unknown,
                             tuple(map(facts.hints.get, trace_ids)) if facts.hints else unknown)
        if new_traces:
            self._count("otelcol_processor_tail_sampling_new_trace_id_received", new_traces)

    def _held(self, trace_ids: tuple[bytes, ...], decided_since: bool) -> list[bool] | None:
        """Which traces of a committed record the buffer takes (None: all): not those being
        decided (settled again by the next round), nor those evicted early (the next round
        decides them, this record too), nor those decided meanwhile (by the next tick)."""
        buffered, deciding, early = self.buffer.traces, self._deciding, self._early
        asked = [trace_id for trace_id in trace_ids
                 if trace_id not in deciding and trace_id not in buffered and trace_id not in early
                 ] if decided_since else []
        known_of = self.cache.lookup_many(asked) if asked else []
        if known_of.count(None) == len(known_of) and deciding.isdisjoint(trace_ids) and early.keys().isdisjoint(
                trace_ids):
            return None
        answers = dict(zip(asked, known_of, strict=True))
        held = [True] * len(trace_ids)
        for at, trace_id in enumerate(trace_ids):
            if trace_id in deciding:  # its move may have been committed before this record
                self._late_records.add(trace_id)
                held[at] = False
            elif trace_id in early:  # indexed: the round that decides it reads this record too
                held[at] = False
            elif (known := answers.get(trace_id)) is not None:  # decided while this commit was under way
                self._unsettled[trace_id] = known
                held[at] = False
        return held

    def _facts(self) -> Facts:
        return Facts(self._times, self._finders, self._confirms)

    async def _wait_for_room(self) -> None:
        """block_on_overflow: hold the request until decisions free room; after twice the decision
        wait (plus a second) it is refused as retryable, so a client never waits without end."""
        self._room.clear()
        self._wake.set()
        try:
            await asyncio.wait_for(self._room.wait(), 2 * self.config.decision_wait + 1.0)
        except TimeoutError:
            raise RetryableError(f"tail sampling holds num_traces ({self.config.num_traces}) traces waiting for "
                                 f"their decision", retry_after=1.0) from None

    def _next_key(self) -> bytes:
        self._seq += 1
        return KEY.pack(self._seq)

    def _enforce_limits(self, arrived: list[TracePart]) -> None:
        too_large = self.config.maximum_trace_size_bytes
        if too_large:
            for trace_id, *_ in arrived:
                if self.buffer.size_of(trace_id) > too_large:  # dropped now, as otelcol: counted, not decided
                    self.buffer.remove(trace_id)
                    self.cache.record(trace_id, False)
                    self._unsettled[trace_id] = False
                    self._count("otelcol_processor_tail_sampling_traces_dropped_too_large", 1)
                    self._wake.set()
        if self.config.block_on_overflow:  # the next request waits for room instead
            return
        over = len(self.buffer) - self.config.num_traces
        limit = self.config.max_buffered_spans
        if over <= 0 and not (limit and self.buffer.spans > limit):
            return
        evicted = self.buffer.oldest(max(over, 1))
        while limit and self.buffer.spans > limit and len(self.buffer):
            evicted += self.buffer.oldest(1)
        self._early.update(dict.fromkeys(evicted))
        self._count("otelcol_processor_tail_sampling_sampling_trace_dropped_too_early", len(evicted))
        self._wake.set()

    # ---- deciding --------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick)
            except TimeoutError:
                pass
            self._wake.clear()
            # one round decides at most `limit` traces; the rest that are due follow at once, not
            # a tick later (a tick of 1000 traces would cap decisions near 10k traces a second)
            for _ in range(_MAX_ROUNDS_PER_TICK):
                if self._stopping:
                    return
                await self.decide_due()
                if not self.buffer.has_due(self.clock()):
                    break
            if len(self.buffer) < self.config.num_traces:
                self._room.set()
            self.relief.update(len(self.buffer), self.buffer.spans)  # it also ends when no data comes

    async def decide_due(self) -> int:
        """Decide every trace that is due (or was evicted); returns how many were decided."""
        limit = max(1000, int(2 * self.config.expected_new_traces_per_sec * self.tick))
        buffered = self.buffer.due_pending(self.clock(), limit)  # what the buffer knew of the due traces
        due, self._early = list(self._early), {}
        due += buffered
        self._deciding.update(due)  # before any await: their spans that arrive now go to new records
        # the records holding the due traces now: one committed later holds spans that came while
        # they were decided, and is settled by the next round (_late_records)
        touched = self.index.keys_of(due)
        try:
            if self._unsettled:
                retry, self._unsettled = self._unsettled, {}
                await self._settle(retry, None)
            return await self._decide(due, buffered, touched) if due else 0
        finally:
            self._deciding.difference_update(due)
            if self._late_records:
                for trace_id in self._late_records.intersection(due):
                    known = self.cache.lookup(trace_id)
                    self._unsettled[trace_id] = bool(known)
                self._late_records.difference_update(due)

    async def _decide(self, due: list[bytes], buffered: dict[bytes, Pending], touched: set[bytes]) -> int:
        """Decide the due traces and move them, reading and moving only the records `touched`."""
        followed = await self.shared.lookup(due) if self.shared is not None else {}  # another replica's
        own = [trace_id for trace_id in due if trace_id not in followed] if followed else due
        # read back only the traces a policy reads (most are decided on what the buffer knows)
        readers = None if self._read_all else policy_readers(self.policies)
        known, read_at = known_traces(own, buffered, readers)
        to_read = [own[at] for at in read_at]
        rows, bodies = await self._read(to_read, within=touched)
        read = set(to_read)
        finals: list[Decision] = []
        evaluated: list[tuple[str, list[Decision]]] = []
        kept: dict[bytes, Pieces] = {}
        for start, end, reading in chunks(read_at, len(own)):
            chunk = known[start:end]
            for at in reading:
                trace_id = own[at]
                chunk[at - start] = self._trace_of(trace_id, rows.get(trace_id, []), buffered.get(trace_id))
            traces = cast(list[Trace], chunk)  # every None replaced
            try:
                decided, by_policy = decide_many(self.policies, traces, self.config.sample_on_first_match)
            except SpansNotRead as exc:  # a policy misjudged what it reads: never again
                log.error("tail sampling reads every trace back from now on", exc_info=exc,
                          extra={"processor": self.id})
                self._read_all = True
                return await self._decide(due, buffered, touched)
            finals += decided
            evaluated += by_policy
            kept.update(self._kept_traces([traces[at - start] for at in reading
                                           if decided[at - start] is Decision.SAMPLED], rows))
        decisions = dict(zip(own, map(_IS_SAMPLED, finals), strict=True))
        if followed:
            decisions = {trace_id: followed[trace_id] if trace_id in followed else decisions[trace_id]
                         for trace_id in due}
        self.telemetry.decisions(evaluated, decisions)
        kept_ids = list(itertools.compress(decisions, decisions.values()))
        self.cache.record_many(kept_ids, True)
        self.cache.record_many(list(itertools.compress(decisions, map(operator.not_, decisions.values()))), False)
        if self.shared is not None:
            self.shared.publish({tid: keep for tid, keep in decisions.items() if tid not in followed})
        # the kept traces not read yet go out as stored, and records that keep pending parts are
        # stored again without the decided ones: both need their bytes
        unread_kept = [trace_id for trace_id in kept_ids if trace_id not in read]
        partial = self.index.partly_decided(decisions, bodies, touched)
        if unread_kept or partial:
            more_rows, more_bodies = await self._read(unread_kept, partial, within=touched, read=bodies)
            rows.update(more_rows)
            bodies.update(more_bodies)
        await self._settle(decisions, (rows, bodies), kept, checked=read, touched=touched)
        return len(due)

    # ---- shared decisions (shared_state: sampler.cluster) ---------------------------------

    def _shared_decisions(self) -> Any:
        if self.config.shared_state is None:
            return None
        from sampler.cluster.redis_state import SharedDecisions  # the Redis client loads only when used
        # a freeze of the replica is no Redis outage: an answer that came meanwhile is read
        return SharedDecisions(self.config.shared_state.redis, self.id, self.metrics, on_conflict=self.cache.record,
                               timeout=suspensions.timeout)

    async def _shared_lookup(self, parts: list[TracePart]) -> dict[bytes, bool]:
        """What Redis knows of the traces this replica neither buffers nor remembers: one lookup."""
        fresh = [trace_id for trace_id, *_ in parts if trace_id not in self.buffer and trace_id not in self._deciding]
        unknown = [trace_id for trace_id, known in zip(fresh, self.cache.lookup_many(fresh), strict=True)
                   if known is None]
        return await self.shared.lookup(unknown) if unknown else {}
