"""The process metrics otelcol serves (`otelcol_process_*`), measured for a Python process, and target_info.

otelcol reads Go's runtime; the CPython equivalents are:

* `runtime_heap_alloc_bytes` (Go: live heap objects): the process' resident anonymous memory
  (`RssAnon`: the malloc and pymalloc heaps and thread stacks), the RSS where that is unknown;
* `runtime_total_sys_memory_bytes` (Go: memory obtained from the OS): the data segment size
  (heap and anonymous mappings, resident or not).

Go's `runtime_total_alloc_bytes` (cumulative bytes allocated) has no equivalent: CPython keeps no
such count, and tracemalloc would cost on every allocation. It is not served.

On Linux they are read from /proc (as psutil reads them there), through descriptors kept open
(runtime/procself.py): a scrape whose connection took the last free descriptor still gets its
answer. psutil, a megabyte of resident memory, is imported only where /proc is missing.
"""

from __future__ import annotations

import os
import time
import uuid
from functools import cache
from typing import TYPE_CHECKING

from edgeagent import __version__
from edgeagent.extensions.metrics import Metrics, Samples
from edgeagent.runtime import loop_errors, procself

if TYPE_CHECKING:
    import psutil

SERVICE_NAME = "edgeagent"
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def define_process_metrics(metrics: Metrics) -> None:
    started = time.monotonic()

    def one(value: float) -> Samples:
        return [((), float(value))]

    metrics.observed_counter("otelcol_process_uptime", "Uptime of the process (seconds)", (),
                             lambda: one(time.monotonic() - started))
    metrics.observed_counter("otelcol_process_cpu_seconds", "Total CPU user and system time in seconds", (),
                             lambda: one(_cpu_seconds()))
    metrics.observed_counter("edgeagent_listener_accept_failures", "accept() calls of the agent's listeners that "
                             "failed for want of a file descriptor (or memory); the connection waits for the "
                             "next try", (), lambda: one(loop_errors.accept_failures()))
    metrics.gauge("otelcol_process_memory_rss", "Total physical memory (resident set size, bytes)", (),
                  lambda: one(_rss_bytes()))
    metrics.gauge("otelcol_process_runtime_heap_alloc_bytes", "Bytes of resident heap memory (RssAnon: the "
                  "malloc and pymalloc heaps)", (), lambda: one(_heap_bytes()))
    metrics.gauge("otelcol_process_runtime_total_sys_memory_bytes", "Total bytes of memory obtained from the OS "
                  "(data segment: heap and anonymous mappings)", (), lambda: one(_data_bytes()))
    metrics.info = {"service.instance.id": str(uuid.uuid4()), "service.name": SERVICE_NAME,
                    "service.version": __version__}
    _statm()  # its file opened now, while descriptors are free (runtime/procself.py)
    _heap_bytes()


def _cpu_seconds() -> float:
    times = os.times()
    return float(times.user + times.system)


@cache
def _process() -> psutil.Process:
    import psutil  # where there is no /proc

    return psutil.Process()


def _statm() -> list[int] | None:
    """/proc/self/statm in pages: size, resident, shared, text, lib, data, dt; None without /proc."""
    try:
        return [int(field) for field in procself.read("statm").split()]
    except OSError:
        return None


def _rss_bytes() -> float:
    statm = _statm()
    return float(statm[1] * PAGE if statm else _process().memory_info().rss)


def _heap_bytes() -> float:
    try:
        for line in procself.read("status").splitlines():
            if line.startswith(b"RssAnon:"):
                return float(int(line.split()[1]) * 1024)  # reported in kB
    except OSError:
        pass  # not Linux: the RSS is the nearest measure
    return _rss_bytes()


def _data_bytes() -> float:
    statm = _statm()
    return float(statm[5] * PAGE if statm else _process().memory_info().vms)  # data is Linux-only
