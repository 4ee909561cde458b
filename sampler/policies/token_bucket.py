"""The token bucket of Go's golang.org/x/time/rate, which otelcol's rate_limiting and
bytes_limiting policies use: `rate` tokens a second, at most `burst`, full at the start.

allow(n) takes n tokens when the bucket holds them and refuses otherwise, taking nothing; a
request larger than `burst` never passes. As in Go, a shortfall worth less than a nanosecond
of refill still passes, and a clock that goes backwards refills nothing.
"""

from __future__ import annotations

from collections.abc import Callable

_NS_PER_SECOND = 1e9


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float]):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock()

    def allow(self, n: int) -> bool:
        now = self.clock()
        elapsed = max(0.0, now - self.last)
        tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        left = tokens - n
        if n > self.burst or (left < 0 and int(-left / self.rate * _NS_PER_SECOND) > 0):
            return False
        self.tokens, self.last = left, now
        return True
