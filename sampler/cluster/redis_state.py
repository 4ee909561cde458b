"""Decisions shared by the hub replicas through Redis: a late span follows its trace's decision
whichever replica it reaches (after a Kafka rebalance, or through another topic).

Design note
===========
Key layout: `<key_prefix><trace id as 32 hex digits>` holds b"1" (kept) or b"0" (dropped),
written as `SET key value PX ttl NX GET`: a decision lives `ttl` in Redis and is never replaced.
A key holding anything else (written by something other than a replica) is no decision:
lookups leave it out, and a write that finds it counts an error and follows its own decision.

First writer wins (NX). Two replicas can each decide a trace on the part of it they received
(around a rebalance) and disagree. Redis keeps the first decision for the whole ttl and every
lookup answers with it, so all later spans of the trace take one way wherever they arrive. The
replica whose write lost learns the winner from the same reply (GET) and records it in its
local cache (`on_conflict`), so its own later spans follow it too. Last writer wins would let
the answer change while replicas are routing late spans by it. NX with GET needs Redis 7.0.

Writes: `publish` only puts decisions into a bounded dict, so the caller never waits; one writer
task sends them in pipelines of up to `send_batch_size` SETs, one round trip each, at most
`flush_interval` after the first one waited. A path too slow for a whole batch within
`operation_timeout` (1,000 SETs are about 116 kB: over 2 s at 50 kB/s) would carry none, though
it carries small ones: a batch whose write timed out is halved (down to one decision), and a
batch of the current size written within a quarter of `operation_timeout` doubles it again (up
to `send_batch_size`), as the export chain halves a request whose timeout ends; one written in
over three quarters of it halves it too, lest the next of its size time out (a new outage). Through 50 kB/s
that is 1,000, 500, 250, 125 timing out, then 62 a trip; a stall of Redis itself costs a few
halvings, won back in as many fast batches. Reads: `lookup` is one MGET for all the ids a
caller asks about, bounded by `operation_timeout`.

Outages: a connection error or a timeout of any one operation marks Redis down: one warning
per outage, the gauge `edgeagent_sampler_shared_state_up` at 0. While down, lookups answer {}
at once (the replica decides with its local caches only); nothing raises to the caller. One
task probes under exponential backoff (cancelled by shutdown) and marks Redis up again, with an
info log. After an operation that timed out, the outage ends (the info log) only once that
operation goes through, and the probes back off meanwhile: a probe's one DEL goes through a
slow path where a batch too large for it does not, and each probe ended the outage, the next
batch beginning another. A single timeout is often no outage at all (the event loop stalled past
`operation_timeout`, a failover, a restart), so decisions are not thrown away with it: those
waiting, a batch whose write failed and those published while down all keep waiting, and the
writer sends them once the probe finds Redis back. A rewrite is harmless: NX with GET answers
the value already there, the replica's own if the lost reply's write took effect.

Failover: a primary demoted to a replica answers every write READONLY on the connections it
keeps, while the endpoint (a DNS name, a proxy that follows Sentinel) leads new ones to the new
primary. That is an outage, not a refusal: every pooled connection is closed, the batch waits
again, and the probe's new connection finds the new primary (go-redis closes a connection that
answers READONLY for the same reason). A replica answers at once, so it is probed every second
while the endpoint still leads to it (a DNS name's TTL), not with the backoff of an outage.
Likewise a server answering LOADING (redis-py's BusyLoadingError, restarted with a large RDB or
AOF, for seconds to minutes) is alive: probed every second, so decisions are shared again
within a second of the load's end, not up to `_BACKOFF_MAX` (30 s) after it.
Refusals proper (OOM, MISCONF) are counted and their decisions dropped, with one warning per
episode: memory at maxmemory's edge is refused and freed by the second, so an episode ends (an
info log) only after `_REFUSALS_OVER_AFTER` of writes stored, none refused.

Bounds while down: size, the same `_PENDING_BATCHES` batches (100,000 decisions with the default
batch size, about 20 MB); past it the oldest decisions give way, counted as `overflow`, since
late spans follow fresh decisions and an old decision's trace is mostly over. Time, `ttl`: a
decision lives ttl from when it was made, so each one waiting carries that moment; one that
waited longer is counted as `expired` rather than sent, the others are written with what
remains of their ttl. A long outage therefore costs the oldest decisions, never more memory.
Shutdown while down does not wait for Redis: what waits is counted as `shutdown`.

Crash and restart: nothing here is kept on the replica; what Redis holds outlives it, so a
restarted replica follows the decisions it made before the restart as well.

Redis restarted without its data (no persistence, the usual pod without a volume): every
decision of the last ttl is gone, and a late span that reaches another replica finds none and is
decided again on part of its trace, maybe the other way. Each new connection asks the server's
run_id (INFO server, as Sentinel-aware clients track it); redis-py reconnects a pooled
connection the server closed without an error, so a restart between two operations is seen
there too. A run_id other than the last one seen is a restart (or a failover to another server,
whose copy may lack the last writes): the replica writes again the decisions it wrote in the
last ttl, from the oldest, with what remains of their ttl; NX leaves what Redis kept as it is. A
decision that lost to another replica's is remembered as the winner, so a rewrite never turns a
trace the other way. Bounds: the newest `_PENDING_BATCHES` batches of decisions (as many as may
wait while down, about 6 MB more at most, the ids shared with the caches) and one batch each
`_REPLAY_INTERVAL`, new decisions first; counted as `republished_decisions`, one info log. A
server behind the endpoint that refuses INFO (a proxy) leaves restarts unnoticed.
Not detected: FLUSHALL/FLUSHDB on a server that keeps running, and keys evicted under an
`allkeys-*` maxmemory policy. Both leave the run_id and the connections as they were, and the
only tells (keyspace notifications, a canary key read on each operation) would cost every
lookup or a subscription for an operator's deliberate act or a misconfiguration: the decision
store wants `noeviction` or `volatile-*` (its keys all carry a ttl) and no flushes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from sampler.cluster.config import SharedStateConfig, shown_url
from sampler.telemetry import NO_METRICS, Counter, MetricsSink

log = logging.getLogger(__name__)

_KEPT, _DROPPED = b"1", b"0"
_PROBE = b"probe"  # deleted by the probes, after the prefix: no decision's key (not hex)
_PENDING_BATCHES = 100  # beyond this many batches of decisions waiting, the oldest are dropped (counted)
_BACKOFF_INITIAL, _BACKOFF_MAX = 0.1, 30.0
_ALIVE_BACKOFF_MAX = 1.0  # a server answering READONLY or LOADING is alive: asked again at least this often
_REPLAY_INTERVAL = 0.02  # a batch written again after a restart leaves at most this often (50 a second)
_REFUSALS_OVER_AFTER = 60.0  # seconds of writes stored, none refused, that end an episode of refusals
_OUTAGE = (RedisError, OSError, asyncio.TimeoutError)
_PREFIX = "edgeagent_sampler_shared_state_"


class _Pool(BlockingConnectionPool):
    """Tells `connected` of each connection it makes, once it is ready (after AUTH and SELECT),
    each time it is made again: redis-py reconnects a pooled connection the server closed without
    an error, so a restart between two operations is seen here or nowhere."""

    connected: Callable[[AbstractConnection], Awaitable[None]] | None = None

    def make_connection(self) -> AbstractConnection:
        connection = super().make_connection()
        if self.connected is not None:
            connection.register_connect_callback(self.connected)
        return connection


def _pool(config: SharedStateConfig) -> _Pool:
    """The connections, with the url's query options (redis-py's: `?health_check_interval=30`)
    but for those this module relies on, which win: replies as bytes (text never equals a
    decision, so nothing would be shared), the timeouts and one attempt per operation (the
    outage logic owns reconnecting and backoff). redis-py's own from_url lets the query win. No read
    timeout of redis-py's own: each operation is bounded by SharedDecisions' `timeout`, which in the
    agent does not count the time it was frozen (a second timer would still fire at the thaw)."""
    options: dict[str, Any] = {**parse_url(config.url), "decode_responses": False,
                               "max_connections": config.pool_size, "timeout": config.connection_timeout,
                               "socket_connect_timeout": config.connection_timeout,
                               "socket_timeout": None, "retry": Retry(NoBackoff(), 0)}
    if config.password:
        options["password"] = config.password
    return _Pool(**options)


class SharedDecisions:
    """`await start()`, `publish(decisions)` (never waits), `await lookup(trace_ids)`,
    `await shutdown()`. Start and shutdown are idempotent; shutdown is safe without start and
    sends the decisions still waiting (bounded by `operation_timeout` per batch)."""

    def __init__(self, config: SharedStateConfig, component_id: str = "tail_sampling",
                 metrics: MetricsSink = NO_METRICS, on_conflict: Callable[[bytes, bool], None] | None = None,
                 timeout: Callable[[float], AbstractAsyncContextManager[Any]] = asyncio.timeout):
        self.config = config
        self._timeout = timeout  # what bounds each operation (the agent's does not count a freeze of it)
        self.id = component_id
        self.url = shown_url(config.url)
        self.on_conflict = on_conflict
        self.up = False
        self._prefix = config.key_prefix.encode()
        self._ttl_ms = int(config.ttl * 1000)
        self._max_pending = _PENDING_BATCHES * config.send_batch_size
        self._batch_size = config.send_batch_size  # halved by a write that timed out, grown back by fast ones
        self._redis: Redis | None = None
        # trace id -> when it was decided (time.monotonic(), > 0), negated for a drop; oldest first
        self._pending: OrderedDict[bytes, float] = OrderedDict()
        self._queued = asyncio.Event()  # something waits in _pending
        self._full = asyncio.Event()  # a whole batch waits, or shutdown: send without lingering
        self._down = asyncio.Event()  # wakes the reconnect task
        self._available = asyncio.Event()  # set while up: the writer waits on it
        self._broken = False  # a task failed (a bug): nothing is queued any more
        self._closing = False
        self._down_since: float | None = None  # None: up, or not yet connected since start
        self._replica = False  # the last probe (or write) reached a replica: READONLY
        self._loading = False  # the last failure was LOADING: a server restarted, reading its data
        # an operation that timed out ("publish", "lookup"): a probe that goes through does not say it
        # would (a batch too large for a slow path), so only its own success ends the outage
        self._unconfirmed = ""
        # an episode of refusals (e.g. OOM), warned once: when it began, when the last refusal came
        self._refusing_since: float | None = None
        self._refused_at = 0.0
        self._run_id: bytes | None = None  # the server's (INFO server): a new one is a restart, or another server
        # the batches written in the last ttl (the newest _max_pending decisions), to write again
        # after a restart, and those still to write again
        self._journal: deque[dict[bytes, float]] = deque()
        self._journaled = 0
        self._replay: deque[dict[bytes, float]] = deque()
        self._replay_at = 0.0
        self._tasks: list[asyncio.Task] = []
        self._counters: dict[str, Counter] = {}
        self._define_metrics(metrics)

    def _define_metrics(self, metrics: MetricsSink) -> None:
        self.metrics = metrics  # the registry it reports to
        for name, text, labels in (
                ("errors", "Failed Redis operations (connect, lookup, publish).", ("processor", "operation")),
                ("dropped_decisions", "Decisions not shared: Redis unavailable, refusing, or too far behind.",
                 ("processor", "reason")),
                ("published_decisions", "Decisions written to Redis (or already there).", ("processor",)),
                ("republished_decisions", "Decisions written again after Redis restarted (or failed over).",
                 ("processor",)),
                ("found_decisions", "Trace ids whose decision a lookup found in Redis.", ("processor", "sampled")),
                ("conflicts", "Decisions that lost to another replica's earlier, different decision.",
                 ("processor",))):
            self._counters[name] = metrics.counter(_PREFIX + name, text, labels)
        metrics.gauge(_PREFIX + "up", "1 while the shared decision store (Redis) answers.", ("processor",),
                      lambda: [((self.id,), 1.0 if self.up else 0.0)])

    def _count(self, name: str, amount: float, *labels: str) -> None:
        self._counters[name].inc(amount, self.id, *labels)

    def health(self) -> dict[str, Any]:
        return {"url": self.url, "up": self.up, "waiting_decisions": len(self._pending),
                "batch_size": self._batch_size}  # below send_batch_size: a path too slow for a whole one

    def _key(self, trace_id: bytes) -> bytes:
        return self._prefix + trace_id.hex().encode()

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (one attempt, bounded by connection_timeout); if Redis does not answer, the
        agent starts all the same and the reconnect task keeps trying."""
        if self._redis is not None:
            return
        pool = _pool(self.config)
        pool.connected = self._connected
        self._redis = Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._run_id = None
        self._batch_size = self.config.send_batch_size
        self._journal.clear()
        self._journaled = 0
        self._replay.clear()
        self._closing = False
        self._broken = False
        self._down_since = None
        self._unconfirmed = ""
        self._tasks = [asyncio.create_task(self._write_loop(), name=f"shared_state_writer:{self.id}"),
                       asyncio.create_task(self._reconnect_loop(), name=f"shared_state_reconnect:{self.id}")]
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        if await self._probe():
            log.info("shared decisions connected to Redis", extra={"processor": self.id, "url": self.url})

    async def shutdown(self) -> None:
        if self._redis is None or self._closing:
            return
        self._closing = True  # the writer sends what waits, then stops
        self._queued.set()
        self._full.set()
        (writer, reconnect), self._tasks = self._tasks, []
        reconnect.cancel()
        if self.up:  # down, nothing would be sent: do not wait for it
            batches = len(self._pending) // self.config.send_batch_size + 1  # smaller ones: no longer
            await asyncio.wait({writer}, timeout=self.config.operation_timeout * (batches + 1))
        writer.cancel()
        await asyncio.gather(writer, reconnect, return_exceptions=True)
        if self._pending:
            self._count("dropped_decisions", len(self._pending), "shutdown")
            self._pending.clear()
        redis, self._redis = self._redis, None
        self.up = False
        await redis.aclose(close_connection_pool=True)

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug: stay down, say so loudly
            log.error("shared decisions stopped working; deciding with local caches only",
                      exc_info=task.exception(), extra={"processor": self.id})
            for other in self._tasks:
                other.cancel()
            self._broken = True
            self._mark_down()

    # ---- reads -----------------------------------------------------------------------------

    async def lookup(self, trace_ids: list[bytes]) -> dict[bytes, bool]:
        """The decisions Redis holds for these ids (True: kept), in one MGET; {} while Redis is
        down, slow or failing. Never raises (but for cancellation)."""
        if not trace_ids or not self.up or self._redis is None:
            return {}
        try:
            async with self._timeout(self.config.operation_timeout):
                values = await self._redis.mget([self._key(trace_id) for trace_id in trace_ids])
        except _OUTAGE as exc:
            self._failed("lookup", exc)
            return {}
        self._succeeded("lookup")
        found = {trace_id: value == _KEPT for trace_id, value in zip(trace_ids, values, strict=False)
                 if value in (_KEPT, _DROPPED)}
        kept = sum(found.values())
        if kept:
            self._count("found_decisions", kept, "true")
        if len(found) > kept:
            self._count("found_decisions", len(found) - kept, "false")
        return found

    # ---- writes ----------------------------------------------------------------------------

    def publish(self, decisions: dict[bytes, bool]) -> None:
        """Queue decisions for Redis and return at once, while Redis is down too (they wait for
        it, within the bounds of the design note); dropped (counted) before start, after shutdown."""
        if not decisions:
            return
        if self._redis is None or self._closing or self._broken:
            self._count("dropped_decisions", len(decisions), "unavailable")
            return
        now = time.monotonic()
        for trace_id, keep in decisions.items():
            self._pending[trace_id] = now if keep else -now
            self._pending.move_to_end(trace_id)  # decided again: as fresh as the others here
        self._trim()
        self._queued.set()
        if len(self._pending) >= self._batch_size:
            self._full.set()

    def _trim(self) -> None:
        """The oldest decisions give way beyond the bound (counted)."""
        excess = len(self._pending) - self._max_pending
        if excess > 0:
            self._count("dropped_decisions", excess, "overflow")
            for _ in range(excess):
                self._pending.popitem(last=False)

    def _requeue(self, batch: dict[bytes, float], again: bool = False) -> None:
        """A batch whose write failed waits again, before the decisions made since."""
        if again:
            self._replay.appendleft(batch)
            self._queued.set()
            return
        for trace_id, stamp in reversed(batch.items()):
            if trace_id not in self._pending:  # else decided again meanwhile: that one stays
                self._pending[trace_id] = stamp
                self._pending.move_to_end(trace_id, last=False)
        self._trim()
        if self._pending:
            self._queued.set()

    async def _write_loop(self) -> None:
        """The only sender of decisions: one pipeline (one round trip) per batch."""
        while True:
            await self._queued.wait()
            if not self._full.is_set() and not self._replay:  # linger: the next moments' decisions share the trip
                try:
                    await asyncio.wait_for(self._full.wait(), self.config.flush_interval)
                except TimeoutError:
                    pass
            if not self.up:  # what waits keeps waiting for the probe to find Redis back
                if self._closing:
                    return
                await self._available.wait()
                continue
            batch = self._take()
            if batch:
                await self._write(batch)
            elif self._replay:
                await self._write_again()
            if self._closing and not self._pending:
                return

    def _take(self) -> dict[bytes, float]:
        """Up to a batch of the oldest decisions waiting, less those older than ttl (counted)."""
        batch: dict[bytes, float] = {}
        oldest = time.monotonic() - self._ttl_ms / 1000
        expired = 0
        while self._pending and len(batch) < self._batch_size:
            trace_id, stamp = self._pending.popitem(last=False)
            if abs(stamp) > oldest:
                batch[trace_id] = stamp
            else:
                expired += 1
        if expired:
            self._count("dropped_decisions", expired, "expired")
        if not self._pending and not self._replay:
            self._queued.clear()
        if len(self._pending) < self._batch_size and not self._closing:
            self._full.clear()
        return batch

    async def _write(self, batch: dict[bytes, float], again: bool = False) -> None:
        """Write a batch: decisions made here (remembered for a restart), or `again` after one."""
        assert self._redis is not None, "the writer runs between start() and shutdown()"
        pipe = self._redis.pipeline(transaction=False)
        now = time.monotonic()
        for trace_id, stamp in batch.items():  # a decision lives ttl from when it was made
            ttl_ms = max(1, self._ttl_ms - int((now - abs(stamp)) * 1000))
            pipe.set(self._key(trace_id), _KEPT if stamp > 0 else _DROPPED, px=ttl_ms, nx=True, get=True)
        try:
            async with self._timeout(self.config.operation_timeout):
                replies = await pipe.execute(raise_on_error=False)
        except _OUTAGE as exc:
            if isinstance(exc, (TimeoutError, RedisTimeout)):
                self._batch_size = max(1, min(self._batch_size, len(batch)) // 2)
            self._failed("publish", exc)
            self._requeue(batch, again)
            return
        self._resize(len(batch), time.monotonic() - now)
        demoted = next((reply for reply in replies if isinstance(reply, ReadOnlyError)), None)
        if demoted is not None:  # not refused: Redis is elsewhere now, the batch waits for it
            await self._replica_reached("publish", demoted)
            self._requeue(batch, again)
            return
        self._succeeded("publish")
        refused: list[Exception] = []
        foreign = 0  # keys holding a value that is no decision: as lookups do, not followed
        for (trace_id, stamp), reply in zip(batch.items(), replies, strict=False):
            keep = stamp > 0
            if isinstance(reply, Exception):
                refused.append(reply)
            elif reply is not None and reply not in (_KEPT, _DROPPED):
                foreign += 1
            elif reply is not None and (reply == _KEPT) != keep:  # another replica decided first
                self._count("conflicts", 1)
                batch[trace_id] = abs(stamp) if reply == _KEPT else -abs(stamp)  # written again as the winner
                if self.on_conflict is not None:
                    self.on_conflict(trace_id, reply == _KEPT)
        self._count("republished_decisions" if again else "published_decisions", len(batch) - len(refused) - foreign)
        if not again:
            self._remember(batch)
        if foreign:
            self._count("errors", 1, "publish")
            self._count("dropped_decisions", foreign, "foreign_value")
        self._refusals(refused)

    # ---- a restart: what Redis lost is written again ------------------------------------

    def _remember(self, batch: dict[bytes, float]) -> None:
        """Keep a batch written for the restart of Redis: the newest decisions of the last ttl,
        at most as many as may wait while it is down."""
        self._journal.append(batch)
        self._journaled += len(batch)
        oldest = time.monotonic() - self._ttl_ms / 1000
        while self._journal and (self._journaled > self._max_pending
                                 or abs(next(reversed(self._journal[0].values()))) <= oldest):
            self._journaled -= len(self._journal.popleft())

    async def _connected(self, connection: AbstractConnection) -> None:
        """Each new connection asks the server's run_id (INFO server): a new one is a restart (or
        a failover to another server), and whatever it held may be gone."""
        try:
            await connection.send_command("INFO", "server", check_health=False)
            info = await connection.read_response()
        except ResponseError:
            return  # INFO refused (a proxy): a restart goes unnoticed
        except BaseException:
            await connection.disconnect(nowait=True)  # its reply unread: not to be used as it is
            raise
        text = info if isinstance(info, bytes) else str(info).encode()  # RESP3's verbatim string: text
        run_id = next((line[7:].strip() for line in text.splitlines() if line.startswith(b"run_id:")), None)
        previous, self._run_id = self._run_id, run_id or self._run_id
        if previous is not None and run_id is not None and run_id != previous:
            self._restarted()

    def _restarted(self) -> None:
        """Write again, from the oldest, the decisions this replica wrote in the last ttl: NX
        leaves any decision Redis kept as it is. Paced (`_REPLAY_INTERVAL`), between new batches."""
        self._replay = deque(self._journal)
        log.info("Redis restarted or failed over (a new run_id): writing again the decisions of the last ttl "
                 "it may have lost", extra={"processor": self.id, "url": self.url, "decisions": self._journaled})
        if self._replay:
            self._queued.set()

    async def _write_again(self) -> None:
        """One batch of those to write again, when its turn comes; those older than ttl are left."""
        wait = self._replay_at - time.monotonic()
        if wait > 0:  # meanwhile new decisions go first
            await asyncio.sleep(min(wait, self.config.flush_interval))
            return
        oldest = time.monotonic() - self._ttl_ms / 1000
        batch = {trace_id: stamp for trace_id, stamp in self._replay.popleft().items() if abs(stamp) > oldest}
        if not self._pending and not self._replay:
            self._queued.clear()
        self._replay_at = time.monotonic() + _REPLAY_INTERVAL
        if batch:
            await self._write(batch, again=True)

    def _resize(self, written: int, took: float) -> None:
        """After a batch went through: one of the current size that took under a quarter of
        operation_timeout doubles it (up to send_batch_size); one that took over three quarters
        halves it, as a timeout would: at the edge of the timeout the next batch of that size
        times out as often as not, each time an outage (a warning) of its own."""
        if took > self.config.operation_timeout * 3 / 4:
            self._batch_size = max(1, min(self._batch_size, written) // 2)
        elif written >= self._batch_size and took < self.config.operation_timeout / 4:
            self._batch_size = min(self._batch_size * 2, self.config.send_batch_size)

    def _refusals(self, refused: list[Exception]) -> None:
        """Count refused decisions; warn once per episode. Memory at maxmemory's edge frees and
        fills again by the second (expiries, new decisions): writes are refused, stored, refused...
        so an episode ends only once writes have been stored `_REFUSALS_OVER_AFTER` since the last
        refusal, not at the first batch stored."""
        now = time.monotonic()
        if refused:
            self._count("errors", 1, "publish")
            self._count("dropped_decisions", len(refused), "refused")
            if self._refusing_since is None:
                self._refusing_since = now
                log.warning("Redis refuses to store sampling decisions; other replicas will not see them",
                            extra={"processor": self.id, "url": self.url, "error": str(refused[0]),
                                   "decisions": len(refused)})
            self._refused_at = now
        elif self._refusing_since is not None and now - self._refused_at >= _REFUSALS_OVER_AFTER:
            refusing = round(self._refused_at - self._refusing_since, 1)
            log.info("Redis stores sampling decisions again",
                     extra={"processor": self.id, "url": self.url, "refusing_seconds": refusing})
            self._refusing_since = None

    # ---- outages ---------------------------------------------------------------------------

    async def _probe(self) -> bool:
        """A write command (DEL of a key that is not there), as a decision is one: a Redis that
        answers PING but stalls writes (paused clients) stays down, rather than coming up and
        failing again at once, a warning each time."""
        self._replica = self._loading = False
        try:
            async with self._timeout(self.config.connection_timeout + self.config.operation_timeout):
                assert self._redis is not None, "probes run between start() and shutdown()"
                await self._redis.delete(self._prefix + _PROBE)
        except ReadOnlyError as exc:
            await self._replica_reached("connect", exc)
            return False
        except ResponseError:
            pass  # it answers, refusing writes (e.g. OOM): the writer counts refusals, lookups still work
        except _OUTAGE as exc:
            self._failed("connect", exc)
            return False
        if self._closing:  # shut down while the probe was on its way
            return False
        if not self._unconfirmed:
            self._recovered()
        self.up = True
        self._available.set()
        return True

    def _recovered(self) -> None:
        """The outage is over: said once, with how long it lasted."""
        if self._down_since is not None:
            log.info("shared decisions are available again", extra={
                "processor": self.id, "url": self.url, "outage_seconds": round(time.monotonic() - self._down_since, 1)})
        self._down_since = None

    def _succeeded(self, operation: str) -> None:
        """An operation went through: the outage it timed out in, if any, is over."""
        if self._unconfirmed == operation:
            self._unconfirmed = ""
            self._recovered()

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._count("errors", 1, operation)
        self._loading = isinstance(exc, BusyLoadingError)
        if operation != "connect" and isinstance(exc, (TimeoutError, RedisTimeout)):
            self._unconfirmed = operation
        if self._down_since is None:  # a new outage (or no connection since start): say so once
            self._down_since = time.monotonic()
            log.warning("shared decisions are unavailable; deciding with local caches only until Redis answers",
                        extra={"processor": self.id, "url": self.url, "operation": operation,
                               "error": str(exc) or type(exc).__name__})
        self._mark_down()
        self._down.set()

    async def _replica_reached(self, operation: str, exc: ReadOnlyError) -> None:
        """READONLY: the server is a replica now, a primary demoted by a failover, while the
        endpoint (a DNS name, a proxy) leads new connections to the new primary. Every pooled
        connection was made to the old one: all are closed, so the next are made anew (go-redis
        closes a connection that answers READONLY for this reason). Until the probe writes through
        a new one, Redis is down: writing on would refuse every decision for good."""
        self._replica = True
        self._failed(operation, exc)
        if self._redis is not None:
            await self._redis.connection_pool.disconnect()

    def _mark_down(self) -> None:
        self.up = False
        self._available.clear()

    async def _reconnect_loop(self) -> None:
        """Probe with exponential backoff (jittered) while Redis is down; shutdown cancels it. A
        replica that answers READONLY is asked again every second at most: an endpoint's DNS name
        leads to the new primary once its TTL is over, and the next probe should follow soon. So is
        a server that answers LOADING (restarted, reading a large RDB or AOF): it answers as soon
        as its data is in, and a backoff grown meanwhile would keep decisions local up to
        `_BACKOFF_MAX` longer. The
        backoff goes on through probes that went through while the outage did not end (what timed
        out timed out again), and starts afresh with the next outage."""
        delay, outage = _BACKOFF_INITIAL, None
        while True:
            await self._down.wait()
            self._down.clear()
            if self._down_since != outage:
                delay, outage = _BACKOFF_INITIAL, self._down_since
            while not self.up:
                alive = self._replica or self._loading
                delay = min(delay, _ALIVE_BACKOFF_MAX) if alive else delay
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                found = self._redis is None or await self._probe()
                alive = self._replica or self._loading
                delay = min(delay * 2, _ALIVE_BACKOFF_MAX if alive else _BACKOFF_MAX)
                if found:
                    break
