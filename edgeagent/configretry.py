"""Retry policy for exporters: otelcol's `retry_on_failure` keys, backoff and Retry-After.

Difference from otelcol: when `max_elapsed_time` runs out, otelcol drops the data. An edge
agent must not, so the sender puts it back in the queue and tries again later. The export
chain (edgeagent.exporters.chain) runs the retries.

A second difference: otelcol waits as long as an upstream's Retry-After says (bounded only by
`max_elapsed_time`, after which it drops the data). Here the data is never dropped, so a
hostile or broken upstream answering `Retry-After: 999999999` would stop the exporter for good;
the honoured delay is capped at RETRY_AFTER_CEILING instead.
"""

from __future__ import annotations

import random
import time
from typing import Protocol

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig
from edgeagent.config.types import Duration

RETRY_AFTER_CEILING = 300.0  # seconds; otelcol's default max_elapsed_time, the longest it would wait


class RetryConfig(ComponentConfig):
    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = Field(0.5, ge=0, le=1)
    multiplier: float = Field(1.5, ge=1)
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0

    @model_validator(mode="after")
    def _check(self) -> RetryConfig:
        if self.initial_interval <= 0:
            raise ValueError("initial_interval must be greater than zero")
        if self.max_interval < self.initial_interval:
            raise ValueError("max_interval must not be smaller than initial_interval")
        return self


class Backoff(Protocol):
    """The settings of a randomized exponential backoff (retry_on_failure, a receiver's error_backoff)."""

    @property
    def initial_interval(self) -> float: ...

    @property
    def multiplier(self) -> float: ...

    @property
    def max_interval(self) -> float: ...

    @property
    def randomization_factor(self) -> float: ...


def backoff_interval(config: Backoff, attempt: int) -> float:
    """The exponential interval before retry number `attempt` (1-based), before randomization."""
    try:
        grown = config.initial_interval * config.multiplier ** (attempt - 1)
    except OverflowError:  # an outage of thousands of attempts: long past max_interval
        return float(config.max_interval)
    return float(min(grown, config.max_interval))


def backoff_delay(config: Backoff, attempt: int, rng: random.Random = random._inst) -> float:
    """The randomized exponential delay before retry number `attempt` (1-based)."""
    interval = backoff_interval(config, attempt)
    spread = config.randomization_factor * interval
    return max(0.0, interval - spread + rng.random() * 2 * spread)


def honoured_retry_after(seconds: float) -> float:
    """The part of an upstream's Retry-After that is honoured: at most RETRY_AFTER_CEILING."""
    return min(seconds, RETRY_AFTER_CEILING)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # an HTTP date is rare; the email package is not loaded until one comes

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
