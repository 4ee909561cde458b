"""The process metrics otelcol serves (`otelcol_process_*`), measured for a Python process, and target_info.

otelcol reads Go's runtime; the CPython equivalents are:

* `runtime_heap_alloc_bytes` (Go: live heap objects): the process' resident anonymous memory
  (`RssAnon`: the malloc and pymalloc heaps and thread stacks), the RSS where that is unknown;
* `runtime_total_sys_memory_bytes` (Go: memory obtained from the OS): the data segment size
  (heap and anonymous mappings, resident or not).

Go's `runtime_total_alloc_bytes` (cumulative bytes allocated) has no equivalent: CPython keeps no
such count, and tracemalloc would cost on every allocation. It is not served.
"""

from __future__ import annotations

import time
import uuid

import psutil

from edgeagent import __version__
from edgeagent.extensions.metrics import Metrics, Samples

SERVICE_NAME = "edgeagent"


def define_process_metrics(metrics: Metrics) -> None:
    process = psutil.Process()
    started = time.monotonic()

    def one(value: float) -> Samples:
        return [((), float(value))]

    metrics.observed_counter("otelcol_process_uptime", "Uptime of the process (seconds)", (),
                             lambda: one(time.monotonic() - started))
    metrics.observed_counter("otelcol_process_cpu_seconds", "Total CPU user and system time in seconds", (),
                             lambda: one(_cpu_seconds(process)))
    metrics.gauge("otelcol_process_memory_rss", "Total physical memory (resident set size, bytes)", (),
                  lambda: one(process.memory_info().rss))
    metrics.gauge("otelcol_process_runtime_heap_alloc_bytes", "Bytes of resident heap memory (RssAnon: the "
                  "malloc and pymalloc heaps)", (), lambda: one(_heap_bytes(process)))
    metrics.gauge("otelcol_process_runtime_total_sys_memory_bytes", "Total bytes of memory obtained from the OS "
                  "(data segment: heap and anonymous mappings)", (), lambda: one(_data_bytes(process)))
    metrics.info = {"service_instance_id": str(uuid.uuid4()), "service_name": SERVICE_NAME,
                    "service_version": __version__}


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _heap_bytes(process: psutil.Process) -> float:
    try:
        with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return float(int(line.split()[1]) * 1024)  # reported in kB
    except OSError:
        pass  # not Linux: the RSS is the nearest measure
    return float(process.memory_info().rss)


def _data_bytes(process: psutil.Process) -> float:
    info = process.memory_info()
    return float(getattr(info, "data", info.vms))  # `data` is Linux-only
