"""The bandwidth cap holds the long-run rate, including for requests larger than the burst."""

from __future__ import annotations

import asyncio

import pytest

from edgeagent.exporters.bandwidth import RateLimitConfig, TokenBucket


@pytest.mark.e2e  # measures a rate over a second
@pytest.mark.parametrize("chunk", [10_000, 120_000])  # smaller and larger than the burst
def test_bytes_per_second_is_held_after_the_first_burst(chunk):
    async def scenario() -> float:
        bucket = TokenBucket(RateLimitConfig(bytes_per_second=200_000, burst=100_000))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(360_000 // chunk):
            await bucket.take(chunk)
        return loop.time() - started
    elapsed = asyncio.run(scenario())
    # the full bucket (100 kB) is free, the rest goes at 200 kB/s; the last chunk larger than the
    # bucket is sent once the bucket is full and leaves a debt that nobody waits for
    expected = (360_000 - 100_000 - max(0, chunk - 100_000)) / 200_000
    assert expected * 0.95 <= elapsed <= expected * 1.15


def test_burst_defaults_to_one_second_of_bandwidth():
    assert RateLimitConfig(bytes_per_second=1000).burst == 1000
