"""The token bucket of Go's golang.org/x/time/rate, which otelcol's rate_limiting and
bytes_limiting policies use: `rate` tokens a second, at most `burst`, full at the start.

allow(n) takes n tokens when the bucket holds them and refuses otherwise, taking nothing; a
request larger than `burst` never passes. As in Go, a shortfall worth less than a nanosecond
of refill still passes, and a clock that goes backwards refills nothing. A bucket of rate 0 or
below never refills (Go's Limiter of such a limit: its burst is all it ever grants).

allow_many(sizes) judges a round of requests at one instant: one clock reading for all of
them, the same answers as allow() of each in turn on a clock that does not move meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

_NS_PER_SECOND = 1e9


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float]):
        self.rate = max(rate, 0.0)  # Go's tokensFromDuration: 0 for a limit of 0 or below
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock()

    def allow(self, n: int) -> bool:
        now = self.clock()
        elapsed = max(0.0, now - self.last)
        tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        left = tokens - n
        if n > self.burst or (left < 0 and (not self.rate or int(-left / self.rate * _NS_PER_SECOND) > 0)):
            return False
        self.tokens, self.last = left, now
        return True

    def allow_many(self, sizes: Iterable[int]) -> list[bool]:
        """allow(n) of each size in turn, all at one instant: the refill is counted once, and after
        it no time passes, so a refused request leaves the tokens as they were for the next."""
        now = self.clock()
        rate, burst = self.rate, self.burst
        tokens = min(float(burst), self.tokens + max(0.0, now - self.last) * rate)
        # a shortfall of at least this waits a nanosecond or more (none passes at rate 0): only a
        # smaller one needs Go's exact test
        near = 2 * rate / _NS_PER_SECOND
        granted: list[bool] = []
        grant = granted.append
        spent = False
        for n in sizes:
            left = tokens - n
            if left >= 0 or (-left < near and n <= burst and int(-left / rate * _NS_PER_SECOND) == 0):
                tokens = left
                spent = True
                grant(True)
            else:
                grant(False)
        if spent:
            self.tokens, self.last = tokens, now
        return granted
