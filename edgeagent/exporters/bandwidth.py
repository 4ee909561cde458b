"""A bandwidth cap for metered links: a token bucket over the bytes an exporter puts on the wire."""

from __future__ import annotations

import asyncio

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig


class RateLimitConfig(ComponentConfig):
    """edgeagent's `rate_limit` exporter key: average `bytes_per_second`, bursts up to `burst` bytes."""

    bytes_per_second: int = Field(gt=0)
    burst: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _default_burst(self) -> RateLimitConfig:
        if self.burst is None:
            self.burst = self.bytes_per_second  # one second's worth
        return self


class TokenBucket:
    """`await take(n)` returns when sending n more bytes keeps the long-run rate under the cap.

    A request larger than the bucket is not refused: it is sent once the bucket is full and
    leaves the bucket in debt, so later requests wait until the debt is paid back."""

    def __init__(self, config: RateLimitConfig):
        self.rate = float(config.bytes_per_second)
        self.capacity = float(config.burst or config.bytes_per_second)
        self.tokens = self.capacity
        self.updated: float | None = None
        self._lock = asyncio.Lock()

    async def take(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:  # one waiter at a time keeps the order and the arithmetic simple
            now = loop.time()
            if self.updated is not None:
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            need = min(float(size), self.capacity)
            if self.tokens < need:
                await asyncio.sleep((need - self.tokens) / self.rate)
                self.tokens = need
                self.updated = loop.time()
            self.tokens -= size
