"""What the sampler remembers in memory: pending traces (metadata only) and past decisions.

The spans themselves are on disk (the raw-traces sub-database), so a buffered trace costs a
small object here whatever its size. Decisions outlive the buffer in two caches, so late
spans follow them: kept trace ids in an LRU, dropped ones in two rotating generations (about
100 bytes per id). The cache never keeps a dropped trace.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

# What the buffer knows of a pending trace: a plain tuple of numbers, replaced when more of the
# trace arrives. CPython's collector stops tracking such a tuple at its first pass (an exact tuple
# only: not a NamedTuple), where an object per buffered trace made every full pass walk the whole
# buffer, 5-8 % of the CPU of a busy tail-sampling agent. Its fields, by index:
FIRST: Final = 0  # clock time of the first span
LAST: Final = 1  # clock time of the latest span
SPANS: Final = 2
SIZE: Final = 3  # bytes
ROOT_AT: Final = 4  # clock time a root span arrived, or None
TIMES: Final = 5  # earliest start and latest end of its spans (sampler.trace), or None
HINTS: Final = 6  # bits of the policies that may find a match in its bytes (sampler.trace), or None
Pending = tuple[float, float, int, int, "float | None", "Times | None", "int | None"]
_SPANS_OF = operator.itemgetter(SPANS)
_TRACE_ID = operator.itemgetter(2)  # of a deadline entry: (deadline, order, trace id)


Times = tuple[int, int]  # earliest start, latest end of a trace's spans (sampler.trace: Trace.times)


def merge_times(known: Times | None, more: Times | None) -> Times | None:
    """The times of a trace's spans so far and of more of its spans; None when either is unknown."""
    if known is None or more is None:
        return None
    return min(known[0], more[0]), max(known[1], more[1])


def merge_hints(known: int | None, more: int | None) -> int | None:
    """The hints of a trace's spans so far and of more of its spans; None when either is unknown."""
    return None if known is None or more is None else known | more


@dataclass(frozen=True)
class Timing:
    decision_wait: float
    after_root: float = 0.0  # 0: off
    inactivity: float = 0.0  # 0: off; then max_duration bounds it
    max_duration: float = 0.0

    def deadline(self, trace: Pending) -> float:
        if self.inactivity:
            due = trace[LAST] + self.inactivity
            if self.max_duration:
                due = min(due, trace[FIRST] + self.max_duration)
        else:
            due = trace[FIRST] + self.decision_wait
        root_at = trace[ROOT_AT]
        if self.after_root and root_at is not None:
            due = min(due, root_at + self.after_root)
        return due


class TraceBuffer:
    """Pending traces by id with their decision deadlines (lazy: moved deadlines re-queue).

    Deadlines mostly come in order (first seen + decision_wait, on a monotonic clock): those go
    to a FIFO, at a fraction of a heap push and pop; one earlier than the FIFO's last (a
    restarted trace, a root span's earlier deadline, a deadline moved later) goes to a heap.
    `due` takes from whichever holds the earliest."""

    def __init__(self, timing: Timing):
        self.timing = timing
        self.traces: dict[bytes, Pending] = {}
        self.spans = 0
        self._heap: list[tuple[float, int, bytes]] = []
        self._fifo: collections.deque[tuple[float, int, bytes]] = collections.deque()
        self._order = itertools.count()
        # decision_wait alone: a new trace's deadline is its first-seen time plus the wait
        self._wait_only = not timing.inactivity and not timing.after_root

    def __len__(self) -> int:
        return len(self.traces)

    def __contains__(self, trace_id: bytes) -> bool:
        return trace_id in self.traces

    def add(self, trace_id: bytes, spans: int, size: int, root: bool, now: float, first: float | None = None,
            times: Times | None = None, hints: int | None = None) -> None:
        """A part of a trace arrived: `spans` spans, `size` bytes, with a root span or not, and the
        part's times and hints (None: not known, which makes the trace's unknown)."""
        trace = self.traces.get(trace_id)
        if trace is None:
            seen = now if first is None else first
            trace = self.traces[trace_id] = (seen, now, spans, size, now if root else None, times, hints)
            deadline = seen + self.timing.decision_wait if self._wait_only else self.timing.deadline(trace)
            self._push((deadline, next(self._order), trace_id))
            self.spans += spans
            return
        earlier = root and trace[ROOT_AT] is None
        trace = self.traces[trace_id] = (trace[FIRST], now, trace[SPANS] + spans, trace[SIZE] + size,
                                         now if earlier else trace[ROOT_AT], merge_times(trace[TIMES], times),
                                         merge_hints(trace[HINTS], hints))
        if earlier and self.timing.after_root:  # an earlier deadline: queue it now
            self._push((self.timing.deadline(trace), next(self._order), trace_id))
        self.spans += spans

    def add_many(self, trace_ids: Sequence[bytes], spans: Sequence[int], sizes: Sequence[int],
                 roots: Sequence[bool], now: float, times: Sequence[Times | None],
                 hints: Sequence[int | None]) -> None:
        """`add` of each part in turn (a request's traces at once, the sequences side by side).
        New traces under decision_wait alone share one deadline, so their entries and tuples are
        built in C and queued in one extend; any other case takes `add` per part."""
        traces, fifo = self.traces, self._fifo
        deadline = now + self.timing.decision_wait
        if (not self._wait_only or fifo and fifo[-1][0] > deadline
                or len(fresh := set(trace_ids)) != len(trace_ids) or not traces.keys().isdisjoint(fresh)):
            for trace_id, count, size, root, known_times, known_hints in zip(
                    trace_ids, spans, sizes, roots, times, hints, strict=True):
                self.add(trace_id, count, size, root, now, times=known_times, hints=known_hints)
            return
        count = len(trace_ids)
        root_at = [now if root else None for root in roots] if any(roots) else itertools.repeat(None, count)
        traces.update(zip(trace_ids, zip(itertools.repeat(now, count), itertools.repeat(now, count), spans, sizes,
                                         root_at, times, hints, strict=True), strict=True))
        # the repeat ends the zip before `_order` is drawn from once more
        fifo.extend(zip(itertools.repeat(deadline, count), self._order, trace_ids, strict=False))
        self.spans += sum(spans)

    def _push(self, entry: tuple[float, int, bytes]) -> None:
        fifo = self._fifo
        if not fifo or fifo[-1][0] <= entry[0]:
            fifo.append(entry)
        else:
            heapq.heappush(self._heap, entry)

    def _pop_due(self, now: float) -> tuple[float, int, bytes] | None:
        """The earliest entry if it is due (taken out), else None."""
        heap, fifo = self._heap, self._fifo
        if heap and (not fifo or heap[0] < fifo[0]):
            return heapq.heappop(heap) if heap[0][0] <= now else None
        return fifo.popleft() if fifo and fifo[0][0] <= now else None

    def due(self, now: float, limit: int) -> list[bytes]:
        """Remove and return up to `limit` traces whose deadline has passed, earliest first."""
        return list(self.due_pending(now, limit))

    def due_pending(self, now: float, limit: int) -> dict[bytes, Pending]:
        """As `due`, with what the buffer knew of each trace (in the order `due` gives them)."""
        out: dict[bytes, Pending] = {}
        heap = self._heap
        # only inactivity moves a deadline later; else an entry that is due is its trace's deadline,
        # and while no heap entry is due the FIFO's due entries come first, in their order
        if self.timing.inactivity or heap and heap[0][0] <= now:
            self._due_one_by_one(now, limit, out)
        else:
            self._due_prefix(now, limit, out)
        if len(heap) + len(self._fifo) > 4 * len(self.traces) + 1024:  # drop stale entries now and then
            self._heap = [entry for entry in heap if entry[2] in self.traces]
            heapq.heapify(self._heap)
            self._fifo = collections.deque(entry for entry in self._fifo if entry[2] in self.traces)
        return out

    def _due_one_by_one(self, now: float, limit: int, out: dict[bytes, Pending]) -> None:
        moves_later = bool(self.timing.inactivity)
        while len(out) < limit:
            entry = self._pop_due(now)
            if entry is None:
                break
            trace_id = entry[2]
            trace = self.traces.get(trace_id)
            if trace is None:
                continue  # decided already (an older entry)
            if moves_later:
                deadline = self.timing.deadline(trace)
                if deadline > now:  # it moved later (inactivity): come back then
                    self._push((deadline, next(self._order), trace_id))
                    continue
            out[trace_id] = trace
            self._remove(trace_id)

    def _due_prefix(self, now: float, limit: int, out: dict[bytes, Pending]) -> None:
        """The FIFO's due entries taken at once (in C: a round takes a thousand or more)."""
        fifo, traces = self._fifo, self.traces
        while len(out) < limit:
            count = _due_count(fifo, now, limit - len(out))
            if not count:
                return
            ids = list(map(_TRACE_ID, itertools.starmap(fifo.popleft, itertools.repeat((), count))))
            held = len(traces)
            found = list(map(traces.pop, ids, itertools.repeat(None)))
            if held - len(traces) < count:  # stale entries among them (traces decided already)
                ids = [trace_id for trace_id, trace in zip(ids, found, strict=True) if trace is not None]
                found = [trace for trace in found if trace is not None]
            taken = cast(list[Pending], found)
            out.update(zip(ids, taken, strict=True))
            self.spans -= sum(map(_SPANS_OF, taken))

    def has_due(self, now: float) -> bool:
        """Whether `due` may return something now (a stale entry may make it say yes)."""
        return bool(self._heap) and self._heap[0][0] <= now or bool(self._fifo) and self._fifo[0][0] <= now

    def size_of(self, trace_id: bytes) -> int:
        trace = self.traces.get(trace_id)
        return trace[SIZE] if trace is not None else 0

    def remove(self, trace_id: bytes) -> None:
        """Take a trace out before its deadline (decided otherwise); its heap entry goes stale."""
        if trace_id in self.traces:
            self._remove(trace_id)

    def oldest(self, count: int) -> list[bytes]:
        """Remove and return the `count` traces seen first (the buffer is over its limit)."""
        out = list(itertools.islice(self.traces, count))
        for trace_id in out:
            self._remove(trace_id)
        return out

    def _remove(self, trace_id: bytes) -> None:
        trace = self.traces.pop(trace_id)
        self.spans -= trace[SPANS]


def _due_count(fifo: collections.deque[tuple[float, int, bytes]], now: float, limit: int) -> int:
    """How many of the first `limit` entries of a FIFO in deadline order are due: a bisection."""
    low, high = 0, min(limit, len(fifo))
    if high and fifo[high - 1][0] <= now:  # the common case: all of them
        return high
    while low < high:
        middle = (low + high) // 2
        if fifo[middle][0] <= now:
            low = middle + 1
        else:
            high = middle
    return low


class DecisionCache:
    """Past decisions by trace id: kept ids in an LRU, dropped ones in two generations of
    `dropped_size` / 2 ids each (when the current one is full the older one is discarded, so
    memory stays fixed).

    A generation is a dict of the ids themselves, whose hashes the ids carry from the split's
    dicts: a request's lookups are passes in C, and an answer is exact. Fingerprints in an
    open-addressed table took 8-10 bytes an id against about 100, but each lookup was a Python
    loop over its probes: 7 % of the CPU of a busy status_code agent, where it is now under 1 %.
    otelcol keeps a decided trace whole until num_traces pushes it out."""

    def __init__(self, kept_size: int, dropped_size: int):
        self.kept_size = kept_size
        self.kept: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._dropped_size = max(1, dropped_size // 2) if dropped_size else 0
        self._current: dict[bytes, None] = {}
        self._previous: dict[bytes, None] = {}
        self.version = 0  # counts `record` calls: while it stays, no lookup's answer changes

    def record(self, trace_id: bytes, kept: bool) -> None:
        """The latest decision for a trace id replaces an earlier one (a kept id is looked up first,
        so a drop after a keep takes it out of the LRU)."""
        self.version += 1
        lru = self.kept
        if kept:
            if self.kept_size:
                lru[trace_id] = None
                lru.move_to_end(trace_id)
                if len(lru) > self.kept_size:
                    lru.popitem(last=False)
            return
        lru.pop(trace_id, None)
        if self._dropped_size:
            self._rotate_when_full()
            self._current[trace_id] = None

    def _rotate_when_full(self) -> None:
        """A full current generation becomes the previous one, and the older one goes."""
        if len(self._current) >= self._dropped_size:
            self._previous, self._current = self._current, {}

    def record_many(self, trace_ids: Sequence[bytes], kept: bool) -> None:
        """`record` for each id in turn (a round's decisions at once)."""
        lru = self.kept
        if kept and (not self.kept_size or len(set(trace_ids)) < len(trace_ids)
                     or not lru.keys().isdisjoint(trace_ids)):
            for trace_id in trace_ids:
                self.record(trace_id, True)
            return
        self.version += len(trace_ids)
        if kept:  # new ids, each once (the common case): appended in order, as record would, in C
            lru.update(zip(trace_ids, itertools.repeat(None)))
            for _ in itertools.repeat(None, len(lru) - self.kept_size):
                lru.popitem(last=False)
            return
        if lru:
            for trace_id in lru.keys() & trace_ids:  # in C: few were kept before
                del lru[trace_id]
        start, size = 0, self._dropped_size
        while size and start < len(trace_ids):
            self._rotate_when_full()
            end = start + size - len(self._current)
            self._current.update(zip(trace_ids[start:end], itertools.repeat(None)))
            start = end

    def lookup(self, trace_id: bytes) -> bool | None:
        """True: kept; False: dropped; None: not known."""
        lru = self.kept
        if trace_id in lru:
            lru.move_to_end(trace_id)
            return True
        return False if trace_id in self._current or trace_id in self._previous else None

    def lookup_many(self, trace_ids: Sequence[bytes]) -> list[bool | None]:
        """`lookup` of each id in turn (a request's new traces at once). Most ids are new: passes
        in C find that none is known, and only a request with a known one goes id by id."""
        lru, current, previous = self.kept, self._current, self._previous
        if ((not lru or lru.keys().isdisjoint(trace_ids)) and current.keys().isdisjoint(trace_ids)
                and previous.keys().isdisjoint(trace_ids)):
            return [None] * len(trace_ids)
        return list(map(self.lookup, trace_ids))
