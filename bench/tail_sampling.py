#!/usr/bin/env python3
"""Tail sampling stage figures: spans per second per core through ingest and decision, and
memory per buffered span.

Method
    In one process, the real `tail_sampling` stage over a real queue store (LMDB, fsync on) in a
    temporary directory, with four policies (status_code ERROR, latency 5 s, probabilistic
    10 %, string_attribute) and a controllable clock.
    1. Ingest: --requests OTLP requests of 512 spans each (about 51 traces of 10 spans, 1 %
       with an error), prepared beforehand as bytes, are parsed and handed to the stage with
       8 in flight, as receivers do. Every span is committed to the raw-traces buffer.
    2. Decide: the clock jumps past decision_wait and the stage decides every trace, moving
       the kept ones to the export queue in its transactions.
    CPU seconds are the process's (user + system, both threads); spans per second per core
    = spans / CPU seconds. Memory per buffered span is the growth of anonymous memory
    (RssAnon) between before ingest and after it, divided by the spans buffered: the spans
    themselves are on disk, so this is the bookkeeping per trace spread over its spans.

    --case status_code|mixed takes the policies and the traffic of the end-to-end comparison
    (bench/tail_sampling_vs_otelcol.py) instead, with a decision_wait of 1 s as there.

Usage
    python bench/tail_sampling.py [--requests 400] [--case four|status_code|mixed]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Status  # noqa: E402

from edgeagent.processors.memory_limiter import anonymous_memory  # noqa: E402
from edgeagent.processors.tail_sampling.config import TailSamplingConfig  # noqa: E402
from edgeagent.processors.tail_sampling.stage import SamplingStage  # noqa: E402
from edgeagent.queue.store import QueueStore  # noqa: E402
from edgeagent.signals import Payload, Signal  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tail_sampling_vs_otelcol as end_to_end  # noqa: E402

POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 5000}},
    {"name": "sample", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
    {"name": "vip", "type": "string_attribute", "string_attribute": {"key": "customer", "values": ["vip"]}},
]
SPANS_PER_REQUEST = 512
SPANS_PER_TRACE = 10


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build_requests(count: int, rng: random.Random) -> list[bytes]:
    bodies = []
    start = time.time_ns()
    for _ in range(count):
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        attribute = rs.resource.attributes.add()
        attribute.key, attribute.value.string_value = "service.name", "shop"
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        trace_id = parent = b""
        for index in range(SPANS_PER_REQUEST):
            if index % SPANS_PER_TRACE == 0:
                trace_id, parent = rng.randbytes(16), b""
            span = ss.spans.add()
            span.trace_id, span.span_id, span.parent_span_id = trace_id, rng.randbytes(8), parent
            parent = parent or span.span_id
            span.name = f"op-{index % 7}"
            span.start_time_unix_nano = start + index * 1000
            span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(1_000_000, 50_000_000)
            customer = span.attributes.add()
            customer.key = "customer"
            customer.value.string_value = "vip" if rng.random() < 0.01 else "regular"
            if rng.random() < 0.001:
                span.status.code = Status.STATUS_CODE_ERROR
        bodies.append(request.SerializeToString())
    return bodies


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(requests: int, case: str) -> None:
    if case == "four":
        policies, bodies, wait = POLICIES, build_requests(requests, random.Random(7)), "30s"
    else:
        traffic = end_to_end.Traffic(7)
        policies, wait = end_to_end.CASES[case], f"{end_to_end.DECISION_WAIT:g}s"
        bodies = [traffic.body() for _ in range(requests)]
    with tempfile.TemporaryDirectory(prefix="edgeagent-bench-") as directory:
        store = QueueStore(directory)
        store.open()
        export = store.queue("otlphttp/traces", Signal.TRACES)
        clock = Clock()
        config = TailSamplingConfig.model_validate({"decision_wait": wait, "num_traces": 10_000_000,
                                                    "policies": policies})
        stage = SamplingStage("tail_sampling", config, host=None, clock=clock)
        stage.attach(store, [export], [])
        store.start()
        gc.collect()
        memory_before = anonymous_memory()

        spans = requests * SPANS_PER_REQUEST
        cpu, wall = cpu_seconds(), time.perf_counter()
        pending = list(bodies)

        async def worker() -> None:
            while pending:
                body = pending.pop()
                await stage.ingest(Payload.from_bytes(Signal.TRACES, body))
        await asyncio.gather(*(worker() for _ in range(8)))
        ingest_cpu, ingest_wall = cpu_seconds() - cpu, time.perf_counter() - wall
        gc.collect()
        buffered = stage.buffer.spans
        per_span = (anonymous_memory() - memory_before) / max(buffered, 1)

        clock.now += 3600
        cpu, wall = cpu_seconds(), time.perf_counter()
        decided = 0
        for _ in range(100_000):
            count = await stage.decide_due()
            if not count:
                break
            decided += count
        decide_cpu, decide_wall = cpu_seconds() - cpu, time.perf_counter() - wall
        kept = export.items
        await store.close()

    print(f"case {case}: {spans:,} spans in {decided:,} traces; buffered {buffered:,}")
    print(f"ingest : {spans / ingest_wall:>10,.0f} spans/s wall, {spans / ingest_cpu:>10,.0f} spans/s per core "
          f"({ingest_cpu:.2f} CPU s)")
    print(f"decide : {spans / decide_wall:>10,.0f} spans/s wall, {spans / decide_cpu:>10,.0f} spans/s per core "
          f"({decided:,} traces, {kept:,} spans kept)")
    total_cpu = ingest_cpu + decide_cpu
    print(f"overall: {spans / total_cpu:>10,.0f} spans/s per core (target >= 200,000)")
    print(f"memory : {per_span:,.0f} bytes per buffered span (target <= 1024)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--case", choices=["four", *end_to_end.CASES], default="four")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(run(args.requests, args.case))


if __name__ == "__main__":
    main()
