"""Stress relief (after Refinery): when the buffer or memory nears its limit, stop buffering new
traces and decide them at once by a deterministic hash of the trace id, so every replica and
every restart keeps the same traces; switch back when the pressure is gone."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator

from otel.durations import Duration
from sampler.settings import Settings

log = logging.getLogger(__name__)
_MEMORY_EVERY = 0.1  # seconds between reads of the process's memory


class StressReliefConfig(Settings):
    """`tail_sampling: stress_relief:` (edgeagent, after Refinery): when the buffer or memory is nearly
    full, stop buffering and decide new traces at once by a deterministic hash of their trace id."""

    mode: Literal["never", "monitor", "always"] = "monitor"
    activation_level: float = Field(90.0, gt=0, le=100)  # percent of the fullest limit
    deactivation_level: float = Field(75.0, ge=0, le=100)
    sampling_percentage: float = Field(10.0, ge=0, le=100)
    minimum_activation_duration: Duration = 10.0
    memory_limit_mib: int = Field(0, ge=0)  # 0: only the buffer limits count

    @model_validator(mode="after")
    def _levels(self) -> StressReliefConfig:
        if self.deactivation_level >= self.activation_level:
            raise ValueError("deactivation_level must be below activation_level (e.g. 75 and 90)")
        return self


class StressRelief:
    """`memory`: the process's memory in bytes, as the host measures it (read only with memory_limit_mib);
    while it cannot be read (no descriptor left) memory counts as full. `name`: the processor, for the logs."""

    def __init__(self, config: StressReliefConfig, num_traces: int, max_spans: int, clock: Callable[[], float],
                 memory: Callable[[], int], name: str = ""):
        self.config = config
        self.memory = memory
        self.name = name
        self._unmeasured = False  # the last memory reading failed
        self.num_traces = num_traces
        self.max_spans = max_spans
        self.clock = clock
        self.active = config.mode == "always"
        self.level = 0.0
        self._since = 0.0
        self._memory = 0
        self._memory_read = float("-inf")
        self._threshold = int(config.sampling_percentage / 100 * (1 << 64))

    def update(self, traces: int, spans: int) -> None:
        if self.config.mode != "monitor":
            return
        now = self.clock()
        levels = [traces / self.num_traces]
        if self.max_spans:
            levels.append(spans / self.max_spans)
        if self.config.memory_limit_mib:
            if now - self._memory_read >= _MEMORY_EVERY:
                self._memory, self._memory_read = self._read_memory(), now
            levels.append(self._memory / (self.config.memory_limit_mib << 20))
        self.level = max(levels) * 100
        if not self.active and self.level >= self.config.activation_level:
            self.active, self._since = True, now
            log.warning("tail sampling is under stress: new traces are decided at once by trace id, without "
                        "buffering", extra={"processor": self.name, "level_percent": round(self.level, 1),
                                            "sampling_percentage": self.config.sampling_percentage})
        elif (self.active and self.level < self.config.deactivation_level
              and now - self._since >= self.config.minimum_activation_duration):
            self.active = False
            log.info("tail sampling stress relief ended; buffering traces again",
                     extra={"processor": self.name, "level_percent": round(self.level, 1)})

    def _read_memory(self) -> int:
        try:
            used = self.memory()
        except Exception as exc:  # noqa: BLE001 - no descriptor left, /proc unreadable: assume the worst
            if not self._unmeasured:
                log.error("tail sampling cannot read the process's memory; it counts as full until it can",
                          exc_info=exc, extra={"processor": self.name})
            self._unmeasured = True
            return self.config.memory_limit_mib << 20
        self._unmeasured = False
        return used

    def keep(self, trace_id: bytes) -> bool:
        return int.from_bytes(trace_id[-8:], "big") < self._threshold
