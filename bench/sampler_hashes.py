#!/usr/bin/env python3
"""Per-call cost of the sampler's per-trace hashing: the probabilistic policy's FNV-1a and the
decision cache's record and lookup.

Method
    Random 16-byte trace ids, built once (--ids of them). Each row runs its call over every id
    in a plain loop, --repeats times (timeit, wall clock, garbage collector off); the fastest
    repeat, divided by the ids, is the row's figure, since a shared machine only ever slows a
    repeat down. The decision cache is the agent's default size (num_traces 50,000: kept LRU of
    50,000, two dropped generations of 25,000 ids) unless --dropped-size says otherwise; it is
    filled to steady state (both generations in use) before timing.

    Rows:
      fnv1a_64             a salted hash of one trace id
      probabilistic evaluate  the policy's decision for a trace: the hash and a comparison
      record dropped       `record(id, False)`: the id into the current generation
      record kept          `record(id, True)`: a new id into the kept LRU
      lookup unknown       `lookup` of an id never recorded: what routing asks of every new trace
      lookup dropped       `lookup` of a recorded dropped id (a late span)
      lookup kept          `lookup` of an id in the kept LRU (a late span)
      record_many dropped  `record_many(ids, False)` over all the ids, per id (when the cache has it)
      evaluate_many 64 / 4000  the probabilistic policy over a round's traces, 64 or 4,000 a call
                           (lanes of one integer), per trace
      lookup_many unknown  `lookup_many` of a request's 52 new ids a call, per id

Usage
    python bench/sampler_hashes.py [--ids 20000] [--repeats 7] [--dropped-size 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sampler.buffer import DecisionCache  # noqa: E402
from sampler.policies.config import ProbabilisticConfig  # noqa: E402
from sampler.policies.probabilistic import DEFAULT_HASH_SALT, Probabilistic, fnv1a_64  # noqa: E402
from sampler.trace import Trace  # noqa: E402


def best_ns(run: Callable[[], object], count: int, repeats: int) -> float:
    return min(timeit.Timer(run).repeat(repeat=repeats, number=1)) / count * 1e9


def filled_cache(kept_size: int, dropped_size: int) -> DecisionCache:
    cache = DecisionCache(kept_size, dropped_size)
    for _ in range(dropped_size):  # twice the filter's capacity: the previous filter is full too
        cache.record(os.urandom(16), False)
    for _ in range(kept_size):
        cache.record(os.urandom(16), True)
    return cache


def rows(ids: list[bytes], dropped_size: int, repeats: int) -> list[tuple[str, Callable[[], object]]]:
    salted = fnv1a_64(DEFAULT_HASH_SALT.encode())

    def fnv() -> None:
        for trace_id in ids:
            fnv1a_64(trace_id, salted)

    traces = [Trace(trace_id) for trace_id in ids]
    evaluate = Probabilistic(ProbabilisticConfig(sampling_percentage=10)).evaluate

    def probabilistic() -> None:
        for trace in traces:
            evaluate(trace)

    cache = filled_cache(dropped_size, dropped_size)
    record = cache.record
    dropped = filled_cache(dropped_size, dropped_size)
    for trace_id in ids:
        dropped.record(trace_id, False)
    kept = filled_cache(dropped_size, dropped_size)
    for trace_id in ids:
        kept.record(trace_id, True)

    def record_dropped() -> None:
        for trace_id in ids:
            record(trace_id, False)

    new_ids = iter([[os.urandom(16) for _ in ids] for _ in range(repeats)])

    def record_kept() -> None:  # ids not yet in the LRU: each repeat its own
        for trace_id in next(new_ids):
            record(trace_id, True)

    def lookups(of: DecisionCache) -> Callable[[], None]:
        def run() -> None:
            find = of.lookup
            for trace_id in ids:
                find(trace_id)
        return run

    unknown = filled_cache(dropped_size, dropped_size)
    out = [("fnv1a_64", fnv), ("probabilistic evaluate", probabilistic),
           ("record dropped", record_dropped), ("record kept", record_kept),
           ("lookup unknown", lookups(unknown)), ("lookup dropped", lookups(dropped)),
           ("lookup kept", lookups(kept))]
    if hasattr(cache, "record_many"):
        out.append(("record_many dropped", lambda: cache.record_many(ids, False)))
    policy = Probabilistic(ProbabilisticConfig(sampling_percentage=10))
    if hasattr(policy, "evaluate_many"):
        for size in (64, 4000):
            def many(size: int = size) -> None:
                for at in range(0, len(traces), size):
                    policy.evaluate_many(traces[at:at + size])
            out.append((f"evaluate_many {size}", many))
    if hasattr(unknown, "lookup_many"):
        def lookup_many() -> None:
            for at in range(0, len(ids), 52):
                unknown.lookup_many(ids[at:at + 52])
        out.append(("lookup_many unknown", lookup_many))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dropped-size", type=int, default=50_000)
    args = parser.parse_args()
    ids = [os.urandom(16) for _ in range(args.ids)]
    for name, run in rows(ids, args.dropped_size, args.repeats):
        print(f"{name:22} {best_ns(run, len(ids), args.repeats):8.0f} ns")


if __name__ == "__main__":
    main()
