"""What a component may ask of the service that runs it, as the collector's `component.Host`.

Components receive a `Host` when they are created and depend on this Protocol only, never on
the concrete service, so a test can hand them a small host of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from edgeagent.errors import DataRefusedError
from edgeagent.extensions.metrics import Metrics
from edgeagent.processors.memory_limiter import Reservation
from edgeagent.signals import Payload, Signal


class Consumer(Protocol):
    """What a receiver hands the requests of one signal to."""

    def admission(self, transport: str, body_bytes: int = 0) -> AbstractContextManager[Reservation]:
        """Hold a request's place in the memory budget while it is read (grow it as the body
        arrives); raises RetryableError."""

    def refusal(self, transport: str) -> tuple[str, DataRefusedError] | None:
        """The refusal of a memory limiter that refuses new data now, with its id (the request counted)."""

    def count_refused(self, transport: str, items: int, limiter_id: str) -> None:
        """Count the items of a request a memory limiter refused."""

    async def consume(self, payload: Payload, transport: str) -> None:
        """Returns once the request is durable (or refused with a typed error)."""


class Telemetry(Protocol):
    """Counting: the service's metrics and the drain meter behind `status`."""

    @property
    def metrics(self) -> Metrics: ...

    def counter_inc(self, name: str, amount: float, *labels: str) -> None:
        """Add to a counter; sends counted here also measure how fast the queues drain."""

    def count(self, name: str, amount: float, *labels: str) -> None:
        """Add to a counter without measuring queue drain."""


class Host(Telemetry, Protocol):
    """Everything a component may ask of the service."""

    @property
    def extensions(self) -> Mapping[str, Any]:
        """Running extensions by id (authenticators, storage)."""

    def consumer(self, receiver_id: str, signal: Signal) -> Consumer | None:
        """The consumer a receiver feeds, None when no pipeline takes that signal from it."""

    def component_failed(self, path: str, message: str) -> None:
        """Report a component that stopped working: health turns unhealthy and names it."""

    def component_stopped(self, path: str, message: str) -> None:
        """Report a worker that stopped for good on an unexpected error: as component_failed,
        then the agent stops and exits 1, so that systemd or the kubelet starts it again (as
        otelcol stops on a component's fatal error). What was acknowledged is on disk."""

    def upstream_state(self, exporter_id: str, online: bool) -> None:
        """Report whether an exporter's upstream answered."""

    def exporter_problem(self, exporter_id: str, problem: str | None) -> None:
        """Report what keeps an exporter from delivering (None once it delivers again); health shows it."""

    def ready(self) -> bool: ...

    def health(self) -> dict[str, Any]: ...
