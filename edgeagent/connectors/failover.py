"""The `failover` connector: send to the first healthy priority level, return to better ones later.

Design note
===========
* Shape (otelcol's): `priority_levels` is a list of levels, each a list of pipelines that
  receive from the connector. Every pipeline of a level gets every request (fan-out); a
  level is healthy when all of them accept it.
* Durability: toward the pipeline that exports to it, the connector is an exporter with its
  own durable queue and sender (`sending_queue`, `retry_on_failure`: the exporters' models and
  defaults; otelcol moved the queue onto the connector for the same reason). The pipelines it
  feeds are sub-pipelines without queues of their own. `send()` runs a request through the
  levels synchronously, so a queue entry is acknowledged only after a level accepted it, and
  a crash at any moment leaves it queued (at least once; a level that fails after some of its
  pipelines accepted a request makes the next level get it too).
* Switching: a retryable failure at the active level moves the same request on to the next
  level, then the next; the first level that accepts it becomes the active one (one log line
  per switch). Only when every level failed does `send()` raise RetryableError, and the data
  stays in the connector's queue for the sender's backoff. Levels above the active one are
  tried last before giving up: when everything else is down, a recovered primary is used at
  once. As in otelcol, a level that refuses a whole request for good (400, 401, 404: a
  misconfigured or unauthorized upstream) has failed too, and the next level gets it; when
  every level refused it for good, the error is raised and the sender moves the data to the
  dead-letter store, and when some level only failed retryably it stays queued. Single items
  refused after a 413 split, while the level took the rest, are refused for good at once (the
  level works). An error of a sub-pipeline's processor (the memory limiter refusing) is
  raised as it is: the data waits in the queue, and no level is blamed for it.
* Delivered in part: a level whose exporter's chain sent a request in parts (after a 413, or
  cut to the exporter's bound) and delivered some before it failed says what it did not
  deliver (`RetryableError.unsent`). When every level failed, that rest is what the error
  raised leaves to send (the sender keeps only it, and its backoff sends only it), so the
  parts the level took are not sent there again (otelcol's retry sender keeps the failed part
  of a request the same way). Only when the level sent the queued request unchanged: the rest
  of one its processors changed would run through them twice.
* Back at once: the error raised when every level failed is `unanswered` only when no level
  answered at all, and `upstream_addresses()` lists where the exporters of every level
  connect, so the sender's Link watches them all (edgeagent.exporters.reach) and any one
  accepting connections again ends the backoff: the backlog goes to whichever level listens.
* Returning: while a lower level is active, every `retry_interval` the next request is first
  offered to the higher levels (with `retry_gap`, one level per gap, highest first); the first
  that accepts it becomes active again. There is no probe traffic and no timer task: with no
  data to send there is nothing to fail over. `max_retries` (0 = no limit) bounds the failed
  retries of one level since the connector last left it; after that the level is retried no
  more until the active level fails and the connector falls back through it again.
* Concurrency: the sender runs `num_consumers` sends at once on one event loop; the state
  lives in `Levels`, which has no I/O and changes only between awaits. A send that claims a
  due retry moves the schedule forward before it awaits, so one request carries each retry.
  A success switches levels only with evidence from the same send (it saw the active level
  fail, or it was a retry), so requests in flight across a switch cannot flap the level.
* Restart: the active level is not stored; the agent starts at the highest level, and the
  first request tells whether it is healthy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from google.protobuf.message import DecodeError
from pydantic import Field, ValidationInfo, field_validator

from edgeagent.component import ConnectorConfig, Factory
from edgeagent.config.types import Duration, format_duration
from edgeagent.configretry import RetryConfig
from edgeagent.connectors.subpipeline import SubPipeline, settle
from edgeagent.errors import PermanentError, RetryableError, none_answered
from edgeagent.exporters.chain import SendResult
from edgeagent.exporters.reach import Address, upstream_addresses
from edgeagent.exporters.sender import QueueConfig
from edgeagent.signals import Payload, Signal

log = logging.getLogger(__name__)

NORMAL, RETRY, LAST_RESORT = "normal", "retry", "last resort"
Failure = RetryableError | PermanentError


class FailoverConfig(ConnectorConfig):
    priority_levels: list[list[str]]
    retry_interval: Duration = Field(600.0, gt=0)
    retry_gap: Duration = 0.0
    max_retries: int = Field(10, ge=0)
    # edgeagent: the connector's own durable queue and the retry of its sender, as for exporters
    sending_queue: QueueConfig = Field(default_factory=QueueConfig)
    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)

    @field_validator("priority_levels")
    @classmethod
    def _levels(cls, levels: list[list[str]]) -> list[list[str]]:
        if not levels:
            raise ValueError("needs at least one level, e.g. [[traces/primary], [traces/backup]]")
        seen: set[str] = set()
        for index, level in enumerate(levels):
            if not level:
                raise ValueError(f"level {index} is empty; list at least one pipeline in it or remove it")
            for pipeline_id in level:
                if pipeline_id in seen:
                    raise ValueError(f"pipeline {pipeline_id!r} is listed more than once; a pipeline belongs to "
                                     f"one level")
                seen.add(pipeline_id)
        return levels

    @field_validator("retry_gap")
    @classmethod
    def _gap_fits_interval(cls, value: float, info: ValidationInfo) -> float:
        interval, levels = info.data.get("retry_interval"), info.data.get("priority_levels")
        if value and interval and levels and value * len(levels) >= interval:
            raise ValueError(f"retry_gap times the number of levels ({len(levels)}) must be less than "
                             f"retry_interval ({format_duration(interval)})")
        return value

    def routes(self) -> list[tuple[str, str]]:
        """(path below the connector, pipeline id) for every pipeline the connector sends to."""
        return [(f"priority_levels::{i}::{j}", pipeline_id)
                for i, level in enumerate(self.priority_levels) for j, pipeline_id in enumerate(level)]


class Levels:
    """Which level is active and when to retry the higher ones. No I/O; times are passed in.

    Level 0 is the highest priority. `plan(now)` says which levels one request should try,
    in order, and of what kind each try is; `failed` and `succeeded` report the outcome."""

    def __init__(self, count: int, retry_interval: float, retry_gap: float, max_retries: int):
        self.count = count
        self.retry_interval = retry_interval
        self.retry_gap = retry_gap
        self.max_retries = max_retries
        self.active = 0
        self.failed_retries = [0] * count
        self.next_retry: float | None = None
        self._round: list[int] = []
        self._round_start = 0.0

    def exhausted(self, level: int) -> bool:
        return self.max_retries > 0 and self.failed_retries[level] >= self.max_retries

    def plan(self, now: float) -> list[tuple[int, str]]:
        retries = self._due_retries(now)
        return ([(level, RETRY) for level in retries]
                + [(level, NORMAL) for level in range(self.active, self.count)]
                + [(level, LAST_RESORT) for level in range(self.active) if level not in retries])

    def _due_retries(self, now: float) -> list[int]:
        if self.next_retry is None or now < self.next_retry:
            return []
        if not self._round:
            self._round = [level for level in range(self.active) if not self.exhausted(level)]
            self._round_start = now
            if not self._round:
                self.next_retry = None
                return []
        take = self._round[:1] if self.retry_gap else self._round
        self._round = self._round[len(take):]
        self.next_retry = now + self.retry_gap if self._round else self._round_start + self.retry_interval
        return take

    def failed(self, level: int, kind: str) -> bool:
        """Count a failed retry; True when it used up the level's max_retries."""
        if kind != RETRY:
            return False
        self.failed_retries[level] += 1
        return self.exhausted(level)

    def succeeded(self, level: int, kind: str, failed_levels: list[int], now: float) -> bool:
        """Make `level` active when this request is evidence for it; True when the level changed."""
        if level == self.active:
            return False
        if level < self.active and kind == NORMAL:
            return False  # planned before another request moved down: no news about the higher level
        if level > self.active and self.active not in failed_levels:
            return False  # planned before another request moved up: the active level did not fail here
        for left in range(self.active, level):
            self.failed_retries[left] = 0
        self.failed_retries[level] = 0
        self.active = level
        self._round = []
        higher = any(not self.exhausted(above) for above in range(level))
        self.next_retry = now + self.retry_interval if higher else None
        return True


class FailoverConnector:
    """An exporter toward the pipelines that export to it; routes to one priority level at a time."""

    def __init__(self, component_id: str, config: FailoverConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self.levels: list[list[SubPipeline]] = []
        self.configured = False
        self.state = Levels(len(config.priority_levels), config.retry_interval, config.retry_gap,
                            config.max_retries)

    def attach(self, pipelines: dict[str, SubPipeline]) -> None:
        """Wire the sub-pipelines the priority levels name (the agent calls this while it builds)."""
        self.levels = [[pipelines[pipeline_id] for pipeline_id in level] for level in self.config.priority_levels]
        self.configured = any(exporter.configured for level in self.levels for pipeline in level
                              for exporter in pipeline.exporters)

    def upstream_addresses(self) -> list[Address]:
        """Where the exporters of every level connect: the connector's sender watches them all
        (edgeagent.exporters.reach), so any level listening again ends its backoff."""
        return [address for level in self.levels for pipeline in level for exporter in pipeline.exporters
                for address in upstream_addresses(exporter)]

    @property
    def active_level(self) -> int:
        return self.state.active

    def describe(self) -> str:
        return " > ".join("+".join(level) for level in self.config.priority_levels)

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        state = self.state
        return {
            "active_level": state.active,
            "active_pipelines": list(self.config.priority_levels[state.active]),
            "priority_levels": [list(level) for level in self.config.priority_levels],
            "failed_retries": list(state.failed_retries),
            "next_retry_in_seconds": None if state.next_retry is None
            else round(max(0.0, state.next_retry - time.monotonic()), 3),
        }

    async def send(self, signal: Signal, body: bytes) -> SendResult:
        try:
            payload = Payload.from_bytes(signal, body)
        except DecodeError as exc:
            raise PermanentError(f"queued request does not decode: {exc}") from exc
        failures: list[tuple[int, Failure]] = []
        rest: list[tuple[bytes, int]] | None = None  # what a level that delivered part of it left
        for level, kind in self.state.plan(time.monotonic()):
            processed = [(pipeline, pipeline.process(payload.copy())) for pipeline in self.levels[level]]
            try:
                result = settle(await asyncio.gather(*(pipeline.send(request) for pipeline, request in processed
                                                       if request is not None), return_exceptions=True))
            except (RetryableError, PermanentError) as exc:
                if isinstance(exc, PermanentError) and not _refused_whole(exc, processed):
                    raise  # the level took the rest of it: it works; these items are refused for good
                if isinstance(exc, RetryableError) and rest is None and _as_queued(processed, body):
                    rest = exc.unsent
                failures.append((level, exc))
                if self.state.failed(level, kind):
                    log.warning("failover stops retrying a priority level: max_retries reached; it is used again "
                                "when the levels below it fail", extra=self._fields(level, error=str(exc)))
                continue
            previous = self.state.active
            if self.state.succeeded(level, kind, [failed for failed, _ in failures], time.monotonic()):
                self._log_switch(previous, level, failures)
            return result
        retryable = [exc for _, exc in failures if isinstance(exc, RetryableError)]
        if not retryable:
            raise failures[-1][1]  # every level refused it for good: the sender dead-letters it
        refused = len(retryable) < len(failures)  # a level answered, refusing it
        failed = RetryableError("every failover priority level failed: " +
                                "; ".join(f"level {level}: {exc}" for level, exc in failures),
                                connection=all(exc.connection for exc in retryable) and not refused,
                                unanswered=False if refused else none_answered(retryable))
        failed.unsent = rest
        raise failed

    def _log_switch(self, previous: int, level: int, failures: list[tuple[int, Failure]]) -> None:
        if level > previous:
            reason = next((str(exc) for failed, exc in failures if failed == previous), "")
            log.warning("failover switched to a lower priority level; data flows there until a higher level works "
                        "again", extra=self._fields(level, from_level=previous, error=reason))
        else:
            log.info("failover returned to a higher priority level", extra=self._fields(level, from_level=previous))

    def _fields(self, level: int, **extra: Any) -> dict[str, Any]:
        return {"connector": self.id, "level": level, "pipelines": ",".join(self.config.priority_levels[level]),
                **extra}


def _as_queued(processed: list[tuple[SubPipeline, Payload | None]], body: bytes) -> bool:
    """Whether every pipeline of a level sent the queued request as it is (its processors changed
    nothing), so that the parts its chains cut are parts of the queued request."""
    return all(request is None or request.serialized() == body for _, request in processed)


def _refused_whole(error: PermanentError, processed: list[tuple[SubPipeline, Payload | None]]) -> bool:
    """Whether a level refused all of a request (as a misconfigured or unauthorized upstream does),
    not only items of it split off after a 413 while it took the rest."""
    if error.parts is None:
        return True
    sent = [request.items for _, request in processed if request is not None]
    return sum(items for _, items in error.parts) >= min(sent, default=0)


FACTORY = Factory("failover", FailoverConfig, FailoverConnector)
