"""The memory limiter's periodic check outlives a measurement that fails: it says so once, counts
it, refuses new data while it cannot measure (nothing else keeps the agent below its limit), and
accepts again once it measures memory below the soft limit."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edgeagent.errors import DataRefusedError
from edgeagent.processors.memory_limiter import MemoryLimiter, MemoryLimiterConfig
from edgeagent.runtime.supervise import ERRORS
from tests.helpers.descriptors import no_free_descriptors

INTERVAL = 0.05


class CountingHost:
    def __init__(self) -> None:
        self.counted: list[tuple[str, tuple[str, ...]]] = []

    def count(self, name: str, amount: float, *labels: str) -> None:
        self.counted.append((name, labels))


async def _until(condition, seconds: float = 1.0) -> bool:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


def test_a_check_that_cannot_read_memory_refuses_data_and_the_checks_go_on(tmp_path, caplog):
    """With every descriptor taken neither /proc nor psutil can be read: the check raised out of its
    loop, which ended silently, and the limiter went on admitting data on a reading that no longer
    changed, however high memory grew."""
    status = tmp_path / "status"
    status.write_text("Name:\tedgeagent\nRssAnon:\t   10240 kB\n")
    host = CountingHost()
    config = MemoryLimiterConfig(limit_mib=1000, spike_limit_mib=200, check_interval=INTERVAL)
    limiter = MemoryLimiter("memory_limiter/edge", config, host=host, status=str(status))

    async def scenario() -> None:
        await limiter.start()
        try:
            limiter.admit()
            with caplog.at_level(logging.ERROR), no_free_descriptors():
                assert await _until(lambda: host.counted), "no failed check was counted"
                await asyncio.sleep(3 * INTERVAL)
            assert limiter._task is not None and not limiter._task.done(), "the check loop stopped"
            assert limiter.refusing
            with pytest.raises(DataRefusedError, match="cannot be measured"):
                limiter.admit()
            assert "error" in limiter.health()
            assert await _until(lambda: not limiter.refusing), "the limiter did not accept data again"
            limiter.admit()
            assert "error" not in limiter.health()
        finally:
            await limiter.shutdown()

    asyncio.run(scenario())
    assert {name for name, _ in host.counted} == {ERRORS}
    assert len(host.counted) >= 2
    failed = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(failed) == 1, "a failure streak is logged once"
    assert failed[0].__dict__.get("processor") == "memory_limiter/edge"


@pytest.mark.parametrize(("rss_kib", "warned"), [(40 * 1024, True), (10 * 1024, False)])
def test_a_limit_below_the_agents_own_memory_at_start_is_named_with_its_cause(tmp_path, caplog, rss_kib, warned):
    """otelcol measures its Go heap (a few MiB), the agent its process's anonymous memory (about 30 MiB
    idle): a limit_mib that otelcol runs under can have this agent refuse every request from its
    start. Only the generic "refuses new data" said so; the start now names the cause and the fix."""
    status = tmp_path / "status"
    status.write_text(f"Name:\tedgeagent\nRssAnon:\t   {rss_kib} kB\n")
    config = MemoryLimiterConfig(limit_mib=40, spike_limit_mib=8, check_interval=INTERVAL)
    limiter = MemoryLimiter("memory_limiter/small", config, host=CountingHost(), status=str(status))

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING):
            await limiter.start()
        await limiter.shutdown()

    asyncio.run(scenario())
    named = [record.getMessage() for record in caplog.records if "at start" in record.getMessage()]
    assert bool(named) == warned, named
    if warned:
        assert "limit_mib" in named[0] and "anonymous memory" in named[0]
