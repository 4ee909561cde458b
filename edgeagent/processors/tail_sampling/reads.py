"""What a decision round reads back of the buffer: only the traces a policy may read the spans of.

Most traces are decided on what the buffer knows of them (span count, size, times, hints): those
are made as unread traces (sampler.trace: Trace.unread) and never leave the disk. A policy says
which traces it may read (sampler.policies.reads_bytes, or reads_many for a round at once); the
others are read back, and decided in runs of at most TRACES_PER_DECISION read-back traces.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import cast

from sampler.buffer import HINTS, SIZE, SPANS, TIMES, Pending
from sampler.policies import NamedPolicy, never_reads
from sampler.trace import Trace

# traces decided together: enough to spread the policies' per-call costs, few enough that what
# they parse of them is freed before it reaches the garbage collector's older generations
TRACES_PER_DECISION = 64
# what Trace.unread takes of what the buffer knows of a trace, after its id
_UNREAD = (itemgetter(SPANS), itemgetter(SIZE), itemgetter(TIMES), itemgetter(HINTS))
Reader = Callable[[list[Trace]], list[bool]]


def policy_readers(policies: Sequence[NamedPolicy]) -> list[Reader] | None:
    """Per policy but those that never read, its reads_bytes of each trace (its reads_many where
    it has one); None when some policy does not say (it reads every trace:
    sampler.policies.reads_bytes)."""
    readers: list[Reader] = []
    for named in policies:
        reader = getattr(named.policy, "reads_bytes", None)
        if reader is None:
            return None
        if reader is not never_reads:
            readers.append(getattr(named.policy, "reads_many", None) or functools.partial(_each_reads, reader))
    return readers


def _each_reads(reads_bytes: Callable[[Trace], bool], traces: list[Trace]) -> list[bool]:
    return list(map(reads_bytes, traces))


def known_traces(own: list[bytes], buffered: dict[bytes, Pending],
                 readers: list[Reader] | None) -> tuple[list[Trace | None], list[int]]:
    """The traces as the buffer knows them, their spans not read back, and the positions of the
    others, None in the list: those a policy may read the spans of, and those the buffer does
    not hold (evicted early). Those are read back; all of them when `readers` is None."""
    if readers is None:
        return [None] * len(own), list(range(len(own)))
    pending = list(map(buffered.get, own))
    if None in pending:  # evicted early (rare)
        held = [at for at, known in enumerate(pending) if known is not None]
        held_traces, _ = known_traces([own[at] for at in held], buffered, readers)
        out: list[Trace | None] = [None] * len(own)
        for at, trace in zip(held, held_traces, strict=True):
            out[at] = trace
        return out, [at for at, trace in enumerate(out) if trace is None]
    made = list(map(Trace.unread, own, *(map(field, cast(list[Pending], pending)) for field in _UNREAD)))
    reads: list[bool] = []
    for reader in readers:  # policy by policy
        reads = list(map(operator.or_, reads, reader(made))) if reads else reader(made)
    read_at = list(itertools.compress(range(len(own)), reads))
    traces = cast(list[Trace | None], made)
    for at in read_at:
        traces[at] = None
    return traces, read_at


def chunks(read_at: list[int], count: int) -> list[tuple[int, int, list[int]]]:
    """(start, end, the positions read back) of the runs of `count` traces decided together: each
    holds at most TRACES_PER_DECISION traces read back, and any number of others (nothing of
    theirs is parsed)."""
    out: list[tuple[int, int, list[int]]] = []
    start = 0
    for first in range(0, len(read_at), TRACES_PER_DECISION):
        reading = read_at[first:first + TRACES_PER_DECISION]
        end = reading[-1] + 1 if first + TRACES_PER_DECISION < len(read_at) else count
        out.append((start, end, reading))
        start = end
    if start < count:
        out.append((start, count, []))
    return out
