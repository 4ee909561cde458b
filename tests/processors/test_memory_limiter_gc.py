"""memory_limiter's forced collections on otelcol's schedule: garbage_collector, the minimum
intervals above the soft and the hard limit and their backoff when a collection does not help.
The process's memory readings and the clock are scripted; the limiter's logic is the real one."""

from __future__ import annotations

import types

import pytest
from pydantic import ValidationError

from edgeagent.processors import memory_limiter
from edgeagent.processors.memory_limiter import MemoryLimiter, MemoryLimiterConfig

MIB = 1 << 20


class Script:
    """The readings `anonymous_memory` gives in turn (the last one repeats), a clock, the collections."""

    def __init__(self, monkeypatch, readings_mib: list[int]):
        self.readings = [mib * MIB for mib in readings_mib]
        self.now = 1000.0
        self.collections = 0
        self.collected_at: list[float] = []
        monkeypatch.setattr(memory_limiter, "anonymous_memory", self._read)
        monkeypatch.setattr(memory_limiter, "time", types.SimpleNamespace(monotonic=lambda: self.now))
        monkeypatch.setattr(memory_limiter, "gc", types.SimpleNamespace(collect=self._collect))
        monkeypatch.setattr(memory_limiter, "_trim_malloc", lambda: None)

    def _read(self, path: str = "") -> int:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def _collect(self) -> None:
        self.collections += 1
        self.collected_at.append(self.now)

    def checks(self, limiter: MemoryLimiter, count: int, every: float = 1.0) -> None:
        for _ in range(count):
            limiter.check()
            self.now += every


def _limiter(**keys) -> MemoryLimiter:
    config = MemoryLimiterConfig(check_interval="1s", limit_mib=100, spike_limit_mib=20, **keys)
    return MemoryLimiter("memory_limiter", config, host=None)


def test_unset_intervals_collect_at_every_check_above_the_soft_limit(monkeypatch):
    script = Script(monkeypatch, [90])  # above the soft limit (80), below the hard one
    limiter = _limiter()
    script.checks(limiter, 5)
    assert script.collections == 5 and limiter.refusing


def test_garbage_collector_disabled_never_collects_but_still_refuses(monkeypatch):
    script = Script(monkeypatch, [90])
    limiter = _limiter(garbage_collector={"enabled": False})
    script.checks(limiter, 5)
    assert script.collections == 0 and limiter.refusing


def test_min_interval_spaces_the_collections_soft_and_hard(monkeypatch):
    script = Script(monkeypatch, [90])
    limiter = _limiter(min_gc_interval_when_soft_limited="3s")
    script.checks(limiter, 10)  # at 0, 4 and 8 s: more than 3 s apart
    assert script.collections == 3
    script = Script(monkeypatch, [120])  # above the hard limit
    limiter = _limiter(min_gc_interval_when_soft_limited="3s", min_gc_interval_when_hard_limited="1s")
    script.checks(limiter, 10)  # more than 1 s apart: every other check
    assert script.collections == 5


def test_collections_that_do_not_help_back_off_up_to_the_cap_and_memory_coming_down_resets(monkeypatch):
    script = Script(monkeypatch, [90])
    limiter = _limiter(max_gc_interval_when_soft_limited="8s")
    script.checks(limiter, 30)  # waits of 1.9 s, 3.8 s, then 7.6 s, then 8 s
    gaps = [later - earlier for earlier, later in zip(script.collected_at, script.collected_at[1:], strict=False)]
    assert gaps[:4] == [2.0, 4.0, 8.0, 9.0], gaps  # the first check after each wait (1.9, 3.8, 7.6, 8 s)
    script.now = script.collected_at[-1] + 2.0  # well within the 8 s wait
    script.readings = [40 * MIB]  # memory came down on its own
    script.checks(limiter, 1)
    script.readings = [90 * MIB]
    before = script.collections
    script.checks(limiter, 1)
    assert script.collections == before + 1  # the wait was reset: a collection 3 s after the last one


@pytest.mark.parametrize("keys, message", [
    ({"min_gc_interval_when_soft_limited": "1s", "min_gc_interval_when_hard_limited": "2s"}, "soft_limited must"),
    ({"min_gc_interval_when_soft_limited": "10s", "max_gc_interval_when_soft_limited": "5s"}, "0 or at least"),
    ({"max_gc_interval_when_soft_limited": "5s", "max_gc_interval_when_hard_limited": "10s"}, "at least max_gc"),
])
def test_inconsistent_gc_intervals_are_refused_as_otelcol_refuses_them(keys, message):
    with pytest.raises(ValidationError, match=message):
        MemoryLimiterConfig(check_interval="1s", limit_mib=100, **keys)
