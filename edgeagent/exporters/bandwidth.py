"""A bandwidth cap for metered links: a token bucket over the bytes an exporter puts on the wire.

The wait for the cap is no part of an attempt: the export chain awaits the exporter's `pace`
before the attempt's timeout starts, so a request queued behind others is not mistaken for an
upstream that did not answer (which would take the link offline and send the data again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Generic, TypeVar, cast

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


W = TypeVar("W")  # what an exporter puts on the wire for one request: its bytes, or its Kafka messages
Encode = Callable[[bytes], Awaitable[W]]  # a queued request -> its wire form
# The request paced last in this task and its wire form: one consumer's, never another's (each
# runs in its own task), and handed from `pace` to the `send` that follows without encoding twice.
_paced: ContextVar[tuple[object, bytes, object] | None] = ContextVar("paced", default=None)


class Pacer(Generic[W]):
    """An exporter's `rate_limit` in two steps: `pace` waits for the cap before the timed attempt,
    `wire` gives the attempt the wire form paced. A send not paced first is paced in `wire`.
    `size`: the bytes a wire form puts on the link."""

    def __init__(self, config: RateLimitConfig | None, size: Callable[[W], int] = len):  # type: ignore[assignment]  # (bytes)
        self.bucket = TokenBucket(config) if config is not None else None
        self.size = size

    async def pace(self, body: bytes, encode: Encode[W]) -> None:
        if self.bucket is None:
            return
        data = await encode(body)
        await self.bucket.take(self.size(data))
        _paced.set((self, body, data))

    async def wire(self, body: bytes, encode: Encode[W]) -> W:
        paced = _paced.get()
        if paced is not None:
            _paced.set(None)
            if paced[0] is self and paced[1] is body:
                return cast(W, paced[2])
        data = await encode(body)
        if self.bucket is not None:
            await self.bucket.take(self.size(data))
        return data
