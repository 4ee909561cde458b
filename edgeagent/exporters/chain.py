"""The export chain: the one way every send path hands requests to an exporter.

Design note
===========
* One chain per (exporter, signal), used by the queued senders, by exporters without a
  queue (`sending_queue.enabled: false`) and by the exporters of failover sub-pipelines, so
  a fix lands once. Exporters only `send()` one request and raise RetryableError or
  PermanentError (edgeagent.errors); the chain does the rest, in this order:
  timeout -> retry with backoff -> split on 413 -> dead letter, and counts otelcol's
  `otelcol_exporter_sent_*` / `otelcol_exporter_send_failed_*` under the exporter's id.
* Timeout: each attempt is bounded by the exporter's `timeout`, whatever the exporter does (one
  that bounds it itself, `SelfTimed`, is handed it); the wait for its bandwidth cap (`Paced`)
  comes before, outside it. A `timeout` of 0 is none (as otelcol): the attempt ends with the
  answer, a failed connection, or shutdown (the sender cancels a delivery still under way when
  its grace period is over).
* A DecodeError out of an exporter that parses what it sends (OTLP/JSON, Kafka keys) means the
  request was damaged in the queue: refused for good (dead-lettered), so it never holds the queue.
* Retry: with `retry_on_failure` (the queued path) a retryable failure is tried again after
  an exponential backoff, lengthened to the upstream's Retry-After when that is longer (as
  otelcol's retry sender: a Retry-After of 0 or a date gone by never shortens it). The wait ends early
  when the chain is stopped (shutdown), so does a wait for the link's permission to send, and an
  attempt that fails once it is stopped is not tried again: each raises ShutdownError (an export
  `whole` gets the attempt's failure), and the caller keeps the data for the next run, as it keeps
  the requests of an export not yet sent when the chain is stopped (those sent are not sent
  again: a stop never waits for a lease cut in many parts to the end of its grace period, which
  cancels the one under way and gives back the whole lease). Without
  it (direct and sub-pipeline paths) one attempt is made and the caller decides. An exporter
  that delivered part of a request before it failed (a failover connector: a level's chain sent
  it in parts) says what it did not (`RetryableError.unsent`): only that is tried again, and
  only that is left to the caller, so the parts delivered are not sent again.
* Size: an exporter that sends a request as something much larger than its protobuf bytes
  (`Bounded`: otlphttp's OTLP/JSON) gets a request larger than its bound cut on its bytes, on a
  thread, into parts of about that size (otel.cut), each sent as a request of its own; the
  parts are sent, retried, halved and given back as the requests of a split lease are.
* A slow link: a request whose attempt its timeout ended (still going out, or its answer not in)
  is sent again at once in halves, down to TIME_SPLIT_FLOOR bytes, before any backoff: a backlog
  merged into requests of megabytes never got through a link that carries a few kB/s (a
  cellular or satellite link, shared by the consumers), where otelcol's requests as clients
  sent them do. What then got through in time becomes the size every request is cut to
  (`_fits`), which grows by a quarter after every four requests of about that size answered
  within a quarter of the timeout, so the requests grow back with the link. A request at the
  floor that times out, or one that cannot be split (not valid protobuf), waits out the backoff
  as any failure does. Only a queued request is halved so: on the direct and sub-pipeline paths
  a timeout ends the one attempt, as in otelcol, and the caller decides (a failover connector
  moves on to the next level after one timeout, not after one per half).
* 413, or any refusal saying the request is over a size limit (a gRPC message over the server's
  maximum; a gateway's 429 with the words of its backend's limit): the request is split in halves, again
  and again down to single items (spans, log records, metric data points), with an explicit
  stack: at most 2n - 1 requests for n items, no recursion. A single item still refused is
  refused for good.
* Dead letters: what the upstream refused for good goes to the caller's DeadLetterSink
  (the queue's dead-letter store); a caller without one gets a PermanentError carrying the
  refused parts (`PermanentError.parts`), so a caller further out stores exactly those.
* Retry-After is honoured up to a ceiling (edgeagent.configretry), so an upstream that
  asks for years pauses the exporter for minutes; the cap is logged once until a send succeeds.
* Upstream state: with a Link (queued path) every attempt passes through it, so all the
  consumers of an exporter share what they learn, and a backoff wait ends as soon as the
  link finds an unreachable upstream back (edgeagent.exporters.reach); without one the
  outcome is reported directly. The last failure is shown in health as the exporter's `problem`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from google.protobuf.message import DecodeError

from edgeagent.configretry import RetryConfig, backoff_delay, honoured_retry_after
from edgeagent.errors import PermanentError, RefusedError, RetryableError, ShutdownError
from edgeagent.exporters.link import Link
from edgeagent.runtime import suspensions
from edgeagent.signals import Signal, split_serialized

log = logging.getLogger(__name__)
PARTIAL_LOG_INTERVAL = 60.0  # seconds between two warnings about partial successes
TIME_SPLIT_FLOOR = 64 << 10  # bytes: a request that times out is halved down to this (about 500 spans)
_FITS_GROWTH = 1.25  # what requests delivered well in time at the size they are cut to let it grow by
_FITS_RUN = 4  # ... so many in a row, each answered within a quarter of the timeout
MAX_FITS = 4 << 20  # the cut ends once it lets through what the sender merges (sender.MERGED_REQUEST_BYTES)
# What a refusal for a request's size says, whatever its status or code: grpc-go's and grpc C core's
# "larger than max", grpc-java's "exceeds maximum size", Go's http.MaxBytesError (otelcol's receiver
# over max_request_body_size), "message length too large", and an edgeagent hub whose queue could
# never hold it ("even when empty"). Its halves may be taken; the same bytes never will.
_SIZE_REFUSAL = re.compile(r"larger than max|exceeds maximum size|request body too large|message length too large|"
                           r"even when empty", re.IGNORECASE)


def refused_for_size(message: str) -> bool:
    """Whether an upstream's refusal says the request is over a size limit (see _SIZE_REFUSAL)."""
    return bool(_SIZE_REFUSAL.search(message))


@dataclass
class SendResult:
    """What a 2xx said: items the upstream rejected in an OTLP partial success, and why."""

    rejected: int = 0
    message: str = ""


def partial_success(signal: Signal, content: bytes) -> SendResult:
    """What an Export*ServiceResponse in protobuf says the upstream rejected (OTLP partial success);
    raises PermanentError when the answer does not decode."""
    if not content:
        return SendResult()
    try:
        response = signal.response_class.FromString(content)
    except DecodeError:
        raise undecodable_answer(signal, content, "OK") from None
    return rejected(signal, response)


def rejected(signal: Signal, response: Any) -> SendResult:
    """The partial success of a decoded Export*ServiceResponse (protobuf messages carry no types)."""
    if not response.HasField("partial_success"):
        return SendResult()
    partial = response.partial_success
    return SendResult(rejected=getattr(partial, f"rejected_{signal.item_name}", 0), message=partial.error_message)


def undecodable_answer(signal: Signal, content: bytes, status: int | str) -> PermanentError:
    """A success whose answer is no Export*ServiceResponse: the upstream may hold the data already, so
    it is not sent again but dead-lettered (otelcol refuses it for good, since v0.156)."""
    shown = content[:16].hex() + ("..." if len(content) > 16 else "")
    return PermanentError(f"upstream answered {status} with an answer that is no {signal.response_class.__name__} "
                          f"({len(content)} bytes: {shown}); the data is not sent again", status=status,
                          body=content[:4096])


class Exporter(Protocol):
    """What the chain asks of an exporter (or of a connector that exports)."""

    id: str
    configured: bool  # an upstream is set; without one the service starts no sender for it

    async def send(self, signal: Signal, body: bytes) -> SendResult: ...


@runtime_checkable
class Paced(Protocol):
    """An exporter with a bandwidth cap (`rate_limit`): the chain awaits `pace` before each attempt's
    timeout starts, so waiting for the cap never counts as an upstream that did not answer."""

    async def pace(self, signal: Signal, body: bytes) -> None: ...


@runtime_checkable
class SelfTimed(Protocol):
    """An exporter that bounds an attempt by the chain's timeout itself (None: no bound), so that it
    can tell an answer whose head came in time and whose body did not from no answer at all (otelcol's
    otlphttp leaves its timeout to Go's http.Client the same way); the chain sets no timer of its own."""

    async def send_within(self, signal: Signal, body: bytes, timeout: float | None) -> SendResult: ...


@runtime_checkable
class Bounded(Protocol):
    """An exporter whose requests cost memory several times their protobuf bytes while it encodes
    them: a request larger than `request_bytes_limit(signal)` (0: no limit) reaches it in parts."""

    def request_bytes_limit(self, signal: Signal) -> int: ...


@runtime_checkable
class Resuming(Protocol):
    """An exporter whose next attempt of the same request sends only what earlier ones did not get
    through (Kafka: the messages not acknowledged yet): a timeout there is progress, so the chain
    never halves its requests for time (halves would be new requests, sent from their start)."""

    resumes_attempts: bool


Part = tuple[bytes, int]  # a serialized request and its items


class DeadLetterSink(Protocol):
    """Where requests refused for good are kept, with the upstream's answer."""

    async def dead_letter(self, refused: list[Part], description: dict[str, Any]) -> None: ...


class Telemetry(Protocol):
    """What the chain reports to its host: counters, upstream state and the exporter's problem."""

    def count(self, name: str, amount: float, *labels: str) -> None: ...

    def counter_inc(self, name: str, amount: float, *labels: str) -> None:
        """Count, and measure the items sent as drained from a queue."""

    def upstream_state(self, exporter_id: str, online: bool) -> None: ...

    def exporter_problem(self, exporter_id: str, problem: str | None) -> None: ...


@dataclass
class Delivery:
    """What became of the requests of one `export()` call."""

    sent: int = 0
    rejected: int = 0  # reported in partial successes: not retried, not stored
    refused: list[Part] = field(default_factory=list)  # refused for good
    refused_items: int = 0
    error: PermanentError | None = None

    def refuse(self, parts: list[Part], error: PermanentError) -> None:
        self.refused += parts
        self.refused_items += sum(items for _, items in parts)
        self.error = self.error or error


class _Partly(Exception):
    """The exporter (a connector) delivered part of a request before it failed: `rest` is what it did
    not, to be sent on alone after the backoff."""

    def __init__(self, rest: list[Part]):
        super().__init__()
        self.rest = rest


class _TooSlow(Exception):
    """An attempt's timeout ended a request large enough to be halved (see the design note)."""

    def __init__(self, halves: list[Part]):
        super().__init__()
        self.halves = halves


class ExportChain:
    def __init__(self, exporter: Exporter, signal: Signal, telemetry: Telemetry, *, timeout: float | None = None,
                 retry: RetryConfig | None = None, link: Link | None = None, drains_queue: bool = False):
        self.exporter = exporter
        self.signal = signal
        self.telemetry = telemetry
        self.timeout = timeout or None  # 0: no timeout, as otelcol
        self.retry = retry if retry is not None and retry.enabled else None
        self.link = link
        self.drains_queue = drains_queue  # sent items leave a queue: they count towards its drain rate
        self._paced = exporter if isinstance(exporter, Paced) else None
        self._self_timed = exporter if isinstance(exporter, SelfTimed) else None
        self._max_bytes = exporter.request_bytes_limit(signal) if isinstance(exporter, Bounded) else 0
        self._fits = 0  # bytes a request is cut to after timeouts on a slow link (0: no cut); shared by consumers
        self._fits_run = 0  # requests in a row answered well in time at about that size
        self._halves_for_time = drains_queue and not isinstance(exporter, Resuming)  # (see the design note)
        self.stopping = asyncio.Event()
        self._last_partial_log = 0.0
        self._capping = False  # an upstream's Retry-After is being cut down; logged once until a success

    def stop(self) -> None:
        """End every backoff wait now; the requests waiting in it fail with ShutdownError."""
        self.stopping.set()

    async def export(self, parts: Sequence[Part], dead_letters: DeadLetterSink | None = None, *,
                     whole: bool = False) -> Delivery:
        """Send requests; returns what was delivered and dead-lettered.

        Raises RetryableError when a request could not be delivered (the caller keeps the data;
        `unsent` says what is left when requests before it were delivered), and PermanentError
        (with `parts`) for refused requests when there is no `dead_letters`. Once the chain is
        stopped no further request goes out (ShutdownError), unless `whole`: the caller cannot keep
        a rest (a lease a client waits for, whose answer covers all of it)."""
        delivery = Delivery()
        pending = list(reversed(parts))  # a stack, so the parts go out in order
        accepted = False  # a request was delivered: the caller must not send it again
        try:
            while pending:
                body, items = pending.pop()
                if self.stopping.is_set() and not whole:  # no new request: the caller keeps this one and the rest
                    raise ShutdownError("the agent is shutting down; the data stays queued")
                limit = self._limit()
                if limit and len(body) > limit and items > 1:
                    parts_of = await self._cut(body, items, limit)
                    if len(parts_of) > 1:
                        pending += reversed(parts_of)
                        continue
                sending = time.monotonic()
                try:
                    result = await self._send(body, items, whole)
                except _TooSlow as slow:
                    self._halved_for_time(len(body), slow.halves)
                    pending += reversed(slow.halves)
                    continue
                except _Partly as partly:
                    accepted = True
                    delivery.sent += max(0, items - sum(n for _, n in partly.rest))
                    pending += reversed(partly.rest)
                    continue
                except PermanentError as exc:
                    halves, refusal = self._halves(body, items, exc)
                    if halves:
                        pending += reversed(halves)
                    else:
                        delivery.refuse(exc.parts if exc.parts is not None else [(body, items)], refusal)
                    continue
                accepted = True
                self._in_time(len(body), time.monotonic() - sending)
                rejected = min(max(result.rejected, 0), items)  # an upstream's count, bounded by what it got
                delivery.sent += items - rejected
                delivery.rejected += rejected
                if result.rejected or result.message:  # a message alone is a warning; otelcol logs it too
                    self._log_partial(result)
        except RetryableError as exc:
            # the exporter's own `unsent`: it delivered part of this request (a connector's level did)
            in_part = exc.unsent is not None
            unsent = [*(exc.unsent if exc.unsent is not None else [(body, items)]), *reversed(pending)]
            self._count("otelcol_exporter_send_failed", sum(n for _, n in unsent) + delivery.refused_items)
            # the refused ones are kept too, to be refused again: they are dead-lettered only with the rest
            exc.unsent = delivery.refused + unsent if accepted or in_part else None
            raise
        finally:
            self._count("otelcol_exporter_sent", delivery.sent)
            self._count("otelcol_exporter_send_failed", 0)  # the series exists from the first send (see _count)
            self._count("edgeagent_exporter_rejected", delivery.rejected)
        if delivery.refused:
            await self._refused(delivery, dead_letters)
        return delivery

    def _limit(self) -> int:
        """Bytes a request is cut to: the exporter's bound, or less on a slow link (0: none)."""
        return min(limit for limit in (self._max_bytes, self._fits) if limit) if self._max_bytes or self._fits else 0

    async def _cut(self, body: bytes, items: int, limit: int) -> list[Part]:
        """`body` cut into parts of about `limit` bytes, on a thread; whole when it is not valid
        protobuf (the exporter, which parses what it sends, then refuses it for good)."""
        try:
            return await asyncio.to_thread(split_serialized, self.signal, body, items, limit)
        except DecodeError:
            return [(body, items)]

    def _halved_for_time(self, size: int, halves: list[Part]) -> None:
        """A request of `size` bytes its timeout ended goes out as `halves`: requests are cut to their
        size from now on."""
        fits = max(TIME_SPLIT_FLOOR, max(len(half) for half, _ in halves))
        self._fits_run = 0
        if not self._fits or fits < self._fits:
            log.warning("a request did not get through in time; sending smaller requests", extra={
                "exporter": self.exporter.id, "signal": self.signal.label, "bytes": size, "now_bytes": fits})
            self._fits = fits

    def _in_time(self, size: int, seconds: float) -> None:
        """A request of `size` bytes was delivered in `seconds`: requests may grow again."""
        if not self._fits or size * 2 < self._fits:
            return
        if self.timeout is not None and seconds > self.timeout / 4:
            self._fits_run = 0
            return
        self._fits_run += 1
        if self._fits_run >= _FITS_RUN:
            self._fits_run = 0
            self._fits = int(self._fits * _FITS_GROWTH)
            if self._fits >= MAX_FITS:
                self._fits = 0

    def _halves(self, body: bytes, items: int, error: PermanentError) -> tuple[list[Part], PermanentError]:
        """The two halves of a request refused as too large; none when it cannot be split, with the
        refusal to record: `error`, or why a request that is not valid protobuf cannot be split."""
        if not error.too_large or items < 2 or error.parts is not None:
            return [], error
        halves = self._in_two(body, items)
        if halves is None:
            return [], PermanentError(f"{error}; the request cannot be split: it is not a valid "
                                      f"{self.signal.label} request", status=error.status, body=error.body)
        return (halves, error) if len(halves) >= 2 else ([], error)

    def _in_two(self, body: bytes, items: int) -> list[Part] | None:
        """`body` as two requests of half its items each; None when it is not valid protobuf."""
        try:
            return split_serialized(self.signal, body, (items + 1) // 2)
        except DecodeError:
            return None

    async def _refused(self, delivery: Delivery, dead_letters: DeadLetterSink | None) -> None:
        error = delivery.error
        assert error is not None
        self._count("otelcol_exporter_send_failed", delivery.refused_items)
        if dead_letters is None:
            raise PermanentError(str(error), status=error.status, body=error.body, parts=delivery.refused)
        description = {"exporter": self.exporter.id, "status": error.status, "reason": str(error),
                       "response": error.body.decode("utf-8", "replace")}
        await dead_letters.dead_letter(delivery.refused, description)
        self.telemetry.count("edgeagent_deadletter_items", delivery.refused_items, self.exporter.id,
                             self.signal.label)
        log.error("upstream rejected data permanently; moved it to the dead-letter store",
                  extra={"exporter": self.exporter.id, "signal": self.signal.label, "items": delivery.refused_items,
                         "error": str(error)})

    async def _send(self, body: bytes, items: int, whole: bool = False) -> SendResult:
        """One request, tried again with backoff while that is allowed; _TooSlow when its timeout
        ended it and it is large enough to be halved, _Partly after the backoff when the exporter
        delivered part of it (RetryableError.unsent: the rest). A failure once the chain is stopped
        is ShutdownError (with the rest, when part was delivered), unless the caller cannot keep the
        request (`whole`: it gets the failure)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while True:
            attempt += 1
            began = self.link.generation if self.link is not None else None
            try:
                return await self._attempt(body, whole)
            except RetryableError as exc:
                if self.stopping.is_set() and not whole:  # not tried again, and no failure: the caller keeps it
                    stop = ShutdownError("the agent is shutting down; the data stays queued")
                    stop.unsent = exc.unsent  # what the exporter delivered of it is not given back
                    raise stop from exc
                if (exc.timed_out and self._halves_for_time and len(body) > TIME_SPLIT_FLOOR and items > 1
                        and not self.stopping.is_set()):
                    halves = self._in_two(body, items)
                    # (not valid protobuf, or nothing to split: retried as any failure, with backoff)
                    if halves is not None and len(halves) >= 2:
                        raise _TooSlow(halves) from exc
                # the time the agent did not run (frozen, suspended) is no time the upstream failed for
                delay = self._next_delay(exc, attempt, loop.time() - started - suspensions.lost_since(started))
                if delay is None:
                    raise
                log.debug("send failed; retrying", extra={"exporter": self.exporter.id, "signal": self.signal.label,
                                                          "attempt": attempt, "error": str(exc)})
                if exc.unsent is None:
                    await self._pause(delay, began)
                    continue
                try:
                    await self._pause(delay, began)
                except ShutdownError as stop:
                    stop.unsent = exc.unsent
                    raise
                raise _Partly(exc.unsent) from exc

    def _next_delay(self, error: RetryableError, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before the next attempt; None when retrying is over."""
        retry = self.retry
        if retry is None or self.stopping.is_set():
            return None
        delay = backoff_delay(retry, attempt)
        if error.retry_after is not None:  # the upstream may lengthen the backoff, never shorten it
            delay = max(delay, error.retry_after)
        if retry.max_elapsed_time > 0 and elapsed + delay > retry.max_elapsed_time:
            return None
        return delay

    async def _pause(self, delay: float, began: int | None = None) -> None:
        """The backoff wait; it ends early when the link finds the upstream back (edgeagent.exporters.reach),
        or does not begin when it was found back since the attempt began (`began`: Link.generation then)."""
        if self.link is not None:
            await self.link.pause(delay, self.stopping, began)
        else:
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except TimeoutError:
                return
        if self.stopping.is_set():
            raise ShutdownError("the agent is shutting down; the data stays queued")

    async def _attempt(self, body: bytes, whole: bool = False) -> SendResult:
        if self.link is None:
            return await self._reported(body)
        async with self.link.attempt(self.stopping, unkept=whole):
            return await self._reported(body)

    async def _call(self, body: bytes) -> SendResult:
        try:
            return await self._timed(body)
        except DecodeError:  # an exporter that converts (OTLP/JSON, Kafka keys) found it damaged in the queue
            raise PermanentError(f"the request is not a valid {self.signal.label} request; it cannot be sent "
                                 f"as the exporter encodes it") from None

    async def _timed(self, body: bytes) -> SendResult:
        if self._paced is not None:
            await self._paced.pace(self.signal, body)
        if self._self_timed is not None:
            return await self._self_timed.send_within(self.signal, body, self.timeout)
        if self.timeout is None:
            return await self.exporter.send(self.signal, body)
        try:
            async with suspensions.timeout(self.timeout):
                return await self.exporter.send(self.signal, body)
        except TimeoutError as exc:
            raise RetryableError(f"upstream did not answer within {self.timeout:g}s", connection=True,
                                 unanswered=None, timed_out=True) from exc

    async def _reported(self, body: bytes) -> SendResult:
        """One attempt, and what it says about the upstream told to the link (or the host)."""
        exporter_id = self.exporter.id
        try:
            result = await self._call(body)
        except RetryableError as exc:
            self._cap_retry_after(exc)
            self.telemetry.exporter_problem(exporter_id, str(exc))
            if self.link is not None:
                await self.link.failed(exc)
            else:
                self.telemetry.upstream_state(exporter_id, online=not exc.connection)
            raise
        except PermanentError:
            await self._reachable()  # it answered: the link works
            raise
        self.telemetry.exporter_problem(exporter_id, None)
        self._capping = False
        await self._reachable()
        return result

    def _cap_retry_after(self, error: RetryableError) -> None:
        """Cut an upstream's Retry-After down to the ceiling before the link and the backoff see it."""
        if error.retry_after is None:
            return
        honoured = honoured_retry_after(error.retry_after)
        if honoured >= error.retry_after:
            return
        if not self._capping:
            self._capping = True
            log.warning("upstream asked to wait longer than the Retry-After ceiling; waiting the ceiling instead",
                        extra={"exporter": self.exporter.id, "signal": self.signal.label,
                               "retry_after": error.retry_after, "honoured": honoured})
        error.retry_after = honoured

    async def _reachable(self) -> None:
        if self.link is not None:
            await self.link.succeeded()
        else:
            self.telemetry.upstream_state(self.exporter.id, online=True)

    def _count(self, prefix: str, items: int) -> None:
        """Sent and failed are recorded on every export, zeros too: a rule that divides one by the other
        finds both series from the first send. (otelcol 0.165 creates the failed series at the first
        failure, whose increase rate() then never sees.)"""
        if items or prefix != "edgeagent_exporter_rejected":
            record = self.telemetry.counter_inc if self.drains_queue else self.telemetry.count
            record(f"{prefix}_{self.signal.item_name}", items, self.exporter.id)

    def _log_partial(self, result: SendResult) -> None:
        now = time.monotonic()
        if now - self._last_partial_log > PARTIAL_LOG_INTERVAL:
            self._last_partial_log = now
            log.warning("upstream accepted the request partially", extra={
                "exporter": self.exporter.id, "signal": self.signal.label, "rejected": result.rejected,
                "upstream_message": result.message})


async def send_now(chain: ExportChain, body: bytes, items: int) -> None:
    """An exporter without a queue: one attempt, and any failure is retryable for the client,
    which still holds the data (nothing was stored here)."""
    try:
        await chain.export([(body, items)])
    except RetryableError:
        raise
    except PermanentError as exc:
        raise RefusedError(f"upstream refused the data: {exc}", retry_after=5.0) from exc
