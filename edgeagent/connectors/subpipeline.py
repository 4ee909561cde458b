"""A pipeline that a connector feeds: its processors and exporters, without a queue of its own.

A pipeline whose receivers are all connectors is a *sub-pipeline*. The connector that feeds it
owns the durable queue and the sender; the sub-pipeline runs one request through its processors
and sends it synchronously through every exporter's export chain (one attempt: the connector's
sender retries), so the connector's queue entry is acknowledged only after the exporters
answered. The chains count each exporter's outcome under its own id and report its upstream
state, as for queued exporters; a failure keeps whether anything answered (`unanswered`), so
the connector's sender knows when to watch for the upstreams to come back, and what was left
undelivered of a request the chain sent in parts (`unsent`: after a 413, or cut to the
exporter's bound), so that the parts delivered are not sent there again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from edgeagent.errors import PermanentError, RetryableError, none_answered
from edgeagent.exporters.chain import ExportChain, SendResult, Telemetry
from edgeagent.signals import Payload, Signal


@dataclass
class SubPipeline:
    """A connector's pipeline: its processors, then its exporters."""

    id: str
    processors: list[Any]
    exporters: list[Any]
    host: Telemetry
    _chains: dict[tuple[str, Signal], ExportChain] = field(default_factory=dict, init=False, repr=False)

    def process(self, payload: Payload) -> Payload | None:
        """Run the processors; their errors (the memory limiter refusing) say nothing about the exporters."""
        for processor in self.processors:
            payload = processor.process(payload)
            if payload is None:
                return None
        return payload

    async def send(self, payload: Payload) -> SendResult:
        """Send a processed request through every exporter; raises RetryableError or PermanentError naming one."""
        body = payload.serialized()
        outcomes = await asyncio.gather(*(self._send(exporter, payload.signal, body, payload.items)
                                          for exporter in self.exporters), return_exceptions=True)
        return settle(outcomes)

    def _chain(self, exporter: Any, signal: Signal) -> ExportChain:
        key = (exporter.id, signal)
        if key not in self._chains:
            self._chains[key] = ExportChain(exporter, signal, self.host, timeout=exporter.config.timeout)
        return self._chains[key]

    async def _send(self, exporter: Any, signal: Signal, body: bytes, items: int) -> SendResult:
        try:
            delivery = await self._chain(exporter, signal).export([(body, items)])
        except RetryableError as exc:
            failed = type(exc)(f"{exporter.id}: {exc}", retry_after=exc.retry_after, connection=exc.connection,
                               unanswered=exc.unanswered)
            failed.unsent = exc.unsent
            raise failed from exc
        except PermanentError as exc:
            raise PermanentError(f"{exporter.id}: {exc}", status=exc.status, body=exc.body, parts=exc.parts) from exc
        return SendResult(rejected=delivery.rejected)


def settle(outcomes: list[Any]) -> SendResult:
    """One answer for a request that went to several places at once (fan-out).

    Any retryable failure makes the whole retryable (the caller tries again, possibly
    elsewhere); otherwise a permanent rejection wins; otherwise the most items any place
    rejected in a partial success. Unexpected exceptions are raised as they are. What a place
    left undelivered (`unsent`) is kept only when it alone failed: the others took all of it."""
    retryable = [o for o in outcomes if isinstance(o, RetryableError)]
    if retryable:
        if len(retryable) == 1:
            if any(isinstance(o, BaseException) and o is not retryable[0] for o in outcomes):
                retryable[0].unsent = None  # another place failed too: it gets all of it again
            raise retryable[0]
        delays = [e.retry_after for e in retryable if e.retry_after is not None]
        raise RetryableError("; ".join(str(e) for e in retryable), retry_after=max(delays) if delays else None,
                             connection=all(e.connection for e in retryable), unanswered=none_answered(retryable))
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    results = [o for o in outcomes if isinstance(o, SendResult)]
    return SendResult(rejected=max((r.rejected for r in results), default=0),
                      message="; ".join(r.message for r in results if r.message))
