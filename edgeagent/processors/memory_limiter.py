"""The `memory_limiter` processor: refuse new data while the agent's memory is too high.

It measures anonymous memory (RssAnon), not RSS: RSS includes LMDB's file-backed pages,
which grow while a large backlog is read and are not the agent's to give back.
Soft limit = limit - spike: above it new data is refused (HTTP 503 + Retry-After, gRPC
UNAVAILABLE) and a GC runs; above the hard limit a GC also runs at every check. The items of a
refused request are counted in otelcol's series (`otelcol_receiver_refused_*`,
`otelcol_processor_memory_limiter_refused_*`) when its body is small enough to count unparsed
(receivers/refused.py).

Between two checks a burst of large requests could overshoot, so the limiter also counts
the requests in flight: a request is admitted only while the last measurement plus the
estimated cost of every request in flight (EXPANSION times its body) stays under the soft
limit, and never when it alone would take memory past the hard limit. A receiver reserves
as the body arrives (Reservation.grow), so a slow or lying client holds only what it sent, and
before parsing raises that to what the parse can take (Reservation.cover, receivers/parse_cost.py):
a body of many tiny messages takes up to ~90 times its size.
Memory that a burst freed is handed back to the system (malloc_trim), so the limiter
recovers as soon as the flood stops. The process's /proc/self/status is read through a descriptor
kept open (runtime/procself.py): one opened for each check failed while idle connections held
every descriptor, and the limiter refused every request of the clients still connected, for as
long as the idle connections stayed (otelcol, reading its Go heap, accepts on). While memory
cannot be measured all the same (/proc unreadable) the limiter refuses new data and its check goes
on, logged once and counted (runtime/supervise.py); the first check that measures again decides anew.

The forced collection (gc.collect and malloc_trim) follows otelcol's schedule and keys:
`garbage_collector: {enabled: false}` turns it off; above the soft limit it runs at most every
`min_gc_interval_when_soft_limited`, above the hard limit every `min_gc_interval_when_hard_limited`;
when one frees less than 5 % and leaves memory above the soft limit, the wait doubles (from the
larger of the minimum and 95 % of check_interval) up to `max_gc_interval_when_soft_limited` /
`..._hard_limited` (0: no backoff), and memory coming down resets it. Unset, every interval is 0:
a collection at every check above the soft limit, as edgeagent always did (otelcol's defaults are
10 s soft, 30 s backoff caps), since collecting costs the agent much less than a Go heap walk.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import Field, field_validator, model_validator

from edgeagent.component import ComponentConfig, Factory, Role, optional_block
from edgeagent.config.types import Duration, Uint32
from edgeagent.errors import BadRequestError, DataRefusedError
from edgeagent.runtime import procself, supervise

if TYPE_CHECKING:
    import ctypes

log = logging.getLogger(__name__)
_MIB = 1 << 20
_GC_EFFECTIVE = 0.95  # a collection that leaves more than 95 % of the memory did not help (otelcol's 5 %)
DEFAULT_CHECK_INTERVAL = 1.0
STATUS = "/proc/self/status"
EXPANSION = 6  # a body in memory while it is read, parsed, processed and serialized
_LIBC: ctypes.CDLL | Literal[False] | None = None  # False: no glibc to trim


def _trim_malloc() -> None:
    """Give freed heap memory back to the system (glibc); a no-op elsewhere."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


class GarbageCollectorConfig(ComponentConfig):
    """otelcol's `garbage_collector`: present (the default) forces collections; `enabled: false` stops them."""


class MemoryLimiterConfig(ComponentConfig):
    check_interval: Duration | None = None
    limit_mib: Uint32 = Field(0, ge=0)
    spike_limit_mib: Uint32 = Field(0, ge=0)
    limit_percentage: Uint32 = Field(0, ge=0, le=100)
    spike_limit_percentage: Uint32 = Field(0, ge=0, le=100)
    min_gc_interval_when_soft_limited: Duration = Field(0.0, ge=0)
    min_gc_interval_when_hard_limited: Duration = Field(0.0, ge=0)
    max_gc_interval_when_soft_limited: Duration = Field(0.0, ge=0)
    max_gc_interval_when_hard_limited: Duration = Field(0.0, ge=0)
    garbage_collector: GarbageCollectorConfig | None = Field(default_factory=GarbageCollectorConfig)

    @field_validator("garbage_collector", mode="before")
    @classmethod
    def _collector_switch(cls, value: Any) -> Any:
        return optional_block(value)

    @model_validator(mode="after")
    def _check_gc_intervals(self) -> MemoryLimiterConfig:
        """otelcol's checks of the intervals, with its reasons."""
        soft_min, hard_min = self.min_gc_interval_when_soft_limited, self.min_gc_interval_when_hard_limited
        soft_max, hard_max = self.max_gc_interval_when_soft_limited, self.max_gc_interval_when_hard_limited
        if soft_min < hard_min:
            raise ValueError("min_gc_interval_when_soft_limited must be at least min_gc_interval_when_hard_limited")
        for name, high, low in (("soft", soft_max, soft_min), ("hard", hard_max, hard_min)):
            if high and high < low:
                raise ValueError(f"max_gc_interval_when_{name}_limited must be 0 or at least "
                                 f"min_gc_interval_when_{name}_limited")
        if soft_max and hard_max and soft_max < hard_max:
            raise ValueError("max_gc_interval_when_soft_limited must be at least max_gc_interval_when_hard_limited")
        return self

    @model_validator(mode="after")
    def _check_limits(self) -> MemoryLimiterConfig:
        if self.check_interval is not None and self.check_interval <= 0:
            raise ValueError("check_interval must be greater than zero")
        if not self.limit_mib and not self.limit_percentage:
            raise ValueError("set limit_mib (or limit_percentage) to a value greater than zero")
        if self.limit_mib and self.spike_limit_mib >= self.limit_mib:
            raise ValueError(
                f"spike_limit_mib ({self.spike_limit_mib}) must be smaller than limit_mib ({self.limit_mib})"
            )
        if self.limit_percentage and self.spike_limit_percentage >= self.limit_percentage:
            raise ValueError("spike_limit_percentage must be smaller than limit_percentage")
        return self

    def config_warnings(self) -> list[str]:
        if self.check_interval is None:
            return [f"check_interval is not set; using {DEFAULT_CHECK_INTERVAL:g}s (otelcol 0.165 refuses a "
                    f"memory_limiter without it: add check_interval: {DEFAULT_CHECK_INTERVAL:g}s for a config "
                    f"both run)"]
        return []

    def limits(self, total_bytes: int) -> tuple[int, int]:
        """(hard limit, soft limit) in bytes."""
        if self.limit_mib:
            hard, spike = self.limit_mib * _MIB, self.spike_limit_mib * _MIB
        else:
            hard = total_bytes * self.limit_percentage // 100
            spike = total_bytes * self.spike_limit_percentage // 100
        return hard, hard - (spike or hard // 5)  # otelcol: an unset spike limit is a fifth of the limit


def anonymous_memory(path: str = STATUS) -> int:
    """Bytes of anonymous resident memory of this process (RssAnon, from `path`), falling back to RSS."""
    try:
        for line in (procself.read("status") if path == STATUS else _read(path)).splitlines():
            if line.startswith(b"RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil  # where there is no /proc

    return psutil.Process().memory_info().rss


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def available_memory(cgroup_root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> int:
    """The smallest memory limit of this process's cgroup and those enclosing it, else the machine's memory."""
    limits = [limit for limit in map(_read_limit, _limit_files(cgroup_root, self_cgroup)) if limit is not None]
    if limits:
        return min(limits)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # MemTotal, as psutil reads it
    except (AttributeError, ValueError, OSError):
        import psutil

        return int(psutil.virtual_memory().total)


def _limit_files(root: str, self_cgroup: str) -> list[str]:
    """memory.max (v2) and memory.limit_in_bytes (v1) of this process's cgroup and each one above it, as
    /proc/self/cgroup names them: a systemd service's MemoryMax is in its own cgroup's directory (it has
    no cgroup namespace); a container's limit is at the root of its namespace."""
    v2 = v1 = "/"
    try:
        with open(self_cgroup) as handle:
            lines = handle.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if number == "0" and not controllers:
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return ([os.path.join(root, directory, "memory.max") for directory in _enclosing(v2)] +
            [os.path.join(root, "memory", directory, "memory.limit_in_bytes") for directory in _enclosing(v1)])


def _enclosing(path: str) -> list[str]:
    """'/a/b' -> ['a/b', 'a', '']; a path outside the namespace ('/../x') counts as its root."""
    parts = [part for part in path.split("/") if part]
    if ".." in parts:
        parts = []
    return ["/".join(parts[:end]) for end in range(len(parts), -1, -1)]


def _read_limit(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
        return int(text) if text != "max" and int(text) < (1 << 60) else None
    except (OSError, ValueError):
        return None


class MemoryLimiter:
    def __init__(self, component_id: str, config: MemoryLimiterConfig, host: Any, status: str = STATUS):
        self.id = component_id
        self.status = status  # where the process's memory is read
        self.config = config
        self.host = host
        self.interval = config.check_interval or DEFAULT_CHECK_INTERVAL
        self.available = available_memory()  # the cgroup's limit (MemoryMax, a container's), else the machine's
        self.hard, self.soft = config.limits(self.available)
        self.refusing = False
        self.error: str | None = None  # why the last check could not measure memory
        self.used = 0
        self.in_flight = 0  # estimated bytes of admitted requests not finished yet
        self._task: asyncio.Task | None = None
        self._last_gc = float("-inf")  # monotonic time of the last forced collection
        self._backoff = {"soft": 0.0, "hard": 0.0}  # the waits grown by collections that did not help
        self._last_used = 0

    async def start(self) -> None:
        if self.hard > self.available:
            log.warning("memory_limiter limit_mib is above the memory the agent may use: the kernel ends the agent "
                        "before the limiter refuses data; set limit_mib below it, or use limit_percentage",
                        extra={"processor": self.id, "limit_mib": self.config.limit_mib,
                               "available_mib": self.available >> 20})
        self.check()
        if self.refusing and self.error is None:
            # otelcol measures its Go heap (a few MiB), this agent its process's anonymous memory
            log.warning("memory_limiter refuses every request from the start: the agent's own anonymous memory "
                        "at start is above the soft limit (limit_mib less spike_limit_mib); otelcol measures its Go "
                        "heap, this agent its whole process; raise limit_mib above what the agent holds idle",
                        extra={"processor": self.id, "used_mib": self.used // _MIB, "soft_limit_mib": self.soft // _MIB,
                               "limit_mib": self.hard // _MIB})
        self._task = asyncio.create_task(self._run(), name=f"{self.id}-check")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        await supervise.every(self.interval, self.check, f"processors::{self.id}", {"processor": self.id},
                              counting=self.host if hasattr(self.host, "count") else None, failing=self._unmeasured)

    def _unmeasured(self, error: Exception | None) -> None:
        """While memory cannot be measured (no descriptor left, /proc unreadable), refuse new data:
        nothing else keeps the agent below its limit. A check that measures again decides anew."""
        self.error = None if error is None else f"{type(error).__name__}: {error}"
        if error is not None:
            self._refuse(True)

    def check(self) -> None:
        self.used = anonymous_memory(self.status)
        above_soft = self._classify(collected=False)
        if above_soft and self.config.garbage_collector is not None:
            mode = "hard" if self.used >= self.hard else "soft"
            wait = max(getattr(self.config, f"min_gc_interval_when_{mode}_limited"), self._backoff[mode])
            if time.monotonic() - self._last_gc > wait:
                gc.collect()
                _trim_malloc()
                self._last_gc = time.monotonic()
                self.used = anonymous_memory(self.status)
                above_soft = self._classify(collected=True)
        self._refuse(above_soft)

    def _refuse(self, refusing: bool) -> None:
        was_refusing = self.refusing
        self.refusing = refusing
        if self.refusing != was_refusing:
            level = logging.WARNING if self.refusing else logging.INFO
            log.log(level, "memory limiter %s new data", "refuses" if self.refusing else "accepts again",
                    extra={"processor": self.id, "used_mib": self.used // _MIB, "soft_limit_mib": self.soft // _MIB,
                           "hard_limit_mib": self.hard // _MIB})

    def _classify(self, collected: bool) -> bool:
        """Whether `used` is above the soft limit; a collection that did not help grows both waits
        (otelcol's checkLimitAndBackoff), memory coming down resets them."""
        above_soft = self.used >= self.soft
        effective = not above_soft or self.used <= self._last_used * _GC_EFFECTIVE
        self._last_used = self.used
        if effective:
            self._backoff = {"soft": 0.0, "hard": 0.0}
        elif collected:
            self._backoff = {mode: self._next_wait(mode) for mode in self._backoff}
        return above_soft

    def _next_wait(self, mode: str) -> float:
        low = getattr(self.config, f"min_gc_interval_when_{mode}_limited")
        high = getattr(self.config, f"max_gc_interval_when_{mode}_limited")
        if not high:
            return float(low)
        return min(max(self._backoff[mode], low, 0.95 * self.interval) * 2, max(high, low))

    def admit(self) -> None:
        if self.refusing and self.error is not None:
            raise DataRefusedError(f"memory usage cannot be measured ({self.error})",
                                   retry_after=max(1.0, self.interval * 2))
        if self.refusing:
            raise DataRefusedError(f"memory usage {self.used // _MIB} MiB is above the soft limit of "
                                   f"{self.soft // _MIB} MiB", retry_after=max(1.0, self.interval * 2))

    def charge(self, cost: int, held: int = 0) -> int:
        """Admit `cost` more bytes of memory for a request that holds `held` already, until `release`;
        raises DataRefusedError."""
        self.admit()
        expected = self.used + self.in_flight + cost
        if expected > self.hard:  # even alone: the first request is no exception
            raise DataRefusedError(f"the request would take memory above the hard limit of {self.hard // _MIB} MiB",
                                   retry_after=max(1.0, self.interval * 2))
        if self.in_flight > held and expected > self.soft:
            raise DataRefusedError(f"requests in flight would take memory above the soft limit of "
                                   f"{self.soft // _MIB} MiB", retry_after=1.0)
        self.in_flight += cost
        return cost

    def release(self, cost: int) -> None:
        self.in_flight -= cost

    @property
    def room(self) -> int:
        """Bytes that requests may still take below the soft limit, as last measured."""
        return self.soft - self.used - self.in_flight

    def process(self, payload: Any) -> Any:
        self.admit()
        return payload

    def health(self) -> dict[str, Any]:
        state = {"refusing": self.refusing, "used_mib": round(self.used / _MIB, 1),
                 "in_flight_mib": round(self.in_flight / _MIB, 1),
                 "soft_limit_mib": self.soft // _MIB, "hard_limit_mib": self.hard // _MIB}
        return state if self.error is None else {**state, "error": self.error}


class Budget(Protocol):
    """What a reservation takes its share from: a memory limiter."""

    hard: int

    @property
    def room(self) -> int: ...

    def charge(self, cost: int, held: int = 0) -> int: ...

    def release(self, cost: int) -> None: ...


class Reservation:
    """One request's place in the budget of every memory limiter of its pipelines.

    It grows with the bytes actually read (and decompressed), never with what a header declares;
    a refusal leaves what was reserved before in place until `release`."""

    def __init__(self, limiters: Sequence[Budget], refused: Callable[[DataRefusedError], None]):
        self._limiters = limiters
        self._refused = refused
        self._costs = [0] * len(limiters)
        self.bytes = 0

    def grow(self, body_bytes: int) -> None:
        if body_bytes <= 0:
            return
        self._charge([body_bytes * EXPANSION] * len(self._limiters))
        self.bytes += body_bytes

    @property
    def limit(self) -> int:
        """The most memory any one request could ever be admitted with (0: no limiter)."""
        return max((limiter.hard for limiter in self._limiters), default=0)

    @property
    def room(self) -> int:
        """What requests may still take below every limiter's soft limit (0: no limiter)."""
        return min((limiter.room for limiter in self._limiters), default=0)

    def cover(self, cost: int, quiet: bool = False) -> None:
        """Raise what is reserved to at least `cost` bytes of memory (receivers/parse_cost.py) before
        the body is parsed; raises BadRequestError when that is more than a limiter's hard limit,
        DataRefusedError (counted, unless `quiet`) when memory is too short for it now."""
        for limiter in self._limiters:
            if cost > limiter.hard:
                raise BadRequestError(f"parsing this request could take {cost // _MIB} MiB of memory, more "
                                      f"than the memory limit of {limiter.hard // _MIB} MiB: send fewer, "
                                      "larger messages per request")
        self._charge([max(0, cost - taken) for taken in self._costs], quiet, alone=True)

    def _charge(self, costs: list[int], quiet: bool = False, alone: bool = False) -> None:
        """Take `costs` from the limiters, all or none; `alone`: the request's own reservation does
        not count as others in flight (a top-up of one request needs room below the hard limit only)."""
        taken: list[tuple[int, int]] = []
        try:
            for index, (limiter, cost) in enumerate(zip(self._limiters, costs, strict=True)):
                if cost > 0:
                    taken.append((index, limiter.charge(cost, self._costs[index] if alone else 0)))
        except DataRefusedError as exc:
            for index, cost in taken:
                self._limiters[index].release(cost)
            if not quiet:
                self._refused(exc)
            raise
        for index, cost in taken:
            self._costs[index] += cost

    def release(self) -> None:
        for limiter, cost in zip(self._limiters, self._costs, strict=True):
            limiter.release(cost)
        self._costs = [0] * len(self._limiters)


FACTORY = Factory("memory_limiter", MemoryLimiterConfig, MemoryLimiter, role=Role.ADMISSION)
