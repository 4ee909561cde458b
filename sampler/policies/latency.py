"""`latency`: sample a trace by its duration, the latest span end minus the earliest span start.

Exactly as otelcol computes it: spans are visited in order, keeping the earliest start and the
latest end seen so far (a timestamp of 0 counts as unset), and the trace is sampled as soon as
that running duration, in whole milliseconds (truncated), is
  * above `threshold_ms`, without an upper threshold (otelcol 0.165; earlier releases kept a
    trace of exactly `threshold_ms`);
  * above `threshold_ms` and at most `upper_threshold_ms`, with one.
With an upper threshold a trace can therefore be sampled on a prefix of its spans whose
duration is in range even when the whole trace lasts longer.

Without an upper threshold, and with every start set, the running duration only grows, so
some prefix passes the threshold exactly when the whole trace does: the trace's earliest start
and latest end answer. A trace that carries them (Trace.times, read as its spans arrived) is
then decided without parsing it.

otelcol subtracts the earliest start from the latest end as unsigned 64-bit integers and reads
the difference as a signed one, int64(maxTime-minTime): with a time from 2**63 on (past 2262)
a difference can wrap round, a trace ending past 2262 is negative and one starting there may
be short. Such a trace is judged span by span so (the split leaves its times unknown, but for
one absurd case it names: sampler.split._add_times); with every time before 2262 no difference
wraps.
"""

from __future__ import annotations

from collections.abc import Sequence

from sampler.policies.config import LatencyConfig
from sampler.policies.view import spans_of
from sampler.split import PAST
from sampler.trace import Decision, Trace

_NS_PER_MS = 1_000_000
_BY_SAMPLED = (Decision.NOT_SAMPLED, Decision.SAMPLED)  # indexed by whether the duration is above the threshold


def whole_ms(nanoseconds: int) -> int:
    """Go's Duration.Milliseconds(): integer division truncated toward zero."""
    if nanoseconds >= 0:
        return nanoseconds // _NS_PER_MS
    return -(-nanoseconds // _NS_PER_MS)


def wrapped_ms(earliest: int, latest: int) -> int:
    """int64(latest-earliest) / int64(time.Millisecond) in Go, for unsigned nanoseconds."""
    return whole_ms((latest - earliest + PAST) % (PAST << 1) - PAST)


def _reach(threshold_ms: int) -> int:
    """The fewest nanoseconds whose whole milliseconds are above threshold_ms: threshold_ms + 1
    whole ones, and from below 0 on, where truncation rounds up, one nanosecond above threshold_ms."""
    return (threshold_ms + 1) * _NS_PER_MS if threshold_ms >= 0 else threshold_ms * _NS_PER_MS + 1


class Latency:
    def __init__(self, config: LatencyConfig):
        self.threshold_ms = config.threshold_ms
        self.upper_threshold_ms = config.upper_threshold_ms
        self.reads_times = not config.upper_threshold_ms  # a trace's times can answer (see above)

    def needs_spans(self, trace: Trace) -> bool:
        """Whether evaluating the trace reads its spans (sampler.policies.decide parses it first)."""
        return not self.reads_times or trace.times is None

    def reads_bytes(self, trace: Trace) -> bool:
        return self.needs_spans(trace)

    def evaluate_many(self, traces: Sequence[Trace]) -> list[Decision]:
        """`evaluate` of each trace; one that carries its times is judged inline: a duration in
        whole milliseconds (truncated toward zero) is above threshold_ms exactly when its
        nanoseconds reach `_reach(threshold_ms)`. One comprehension: half the cost of chained
        maps, whose subtraction and comparison calls cost more than the loop."""
        if self.upper_threshold_ms:
            return list(map(self.evaluate, traces))
        reach, by_sampled, evaluate = _reach(self.threshold_ms), _BY_SAMPLED, self.evaluate
        return [by_sampled[times[1] - times[0] >= reach] if (times := trace.times) is not None else evaluate(trace)
                for trace in traces]

    def _whole(self, start: int, end: int) -> Decision:
        nanoseconds = end - start
        duration = nanoseconds // _NS_PER_MS if nanoseconds >= 0 else whole_ms(nanoseconds)
        return Decision.SAMPLED if duration > self.threshold_ms else Decision.NOT_SAMPLED

    def evaluate(self, trace: Trace) -> Decision:
        low, high = self.threshold_ms, self.upper_threshold_ms
        times = trace.times
        if times is not None and not high:
            return self._whole(*times)
        spans = spans_of(trace)
        if not spans:
            return Decision.NOT_SAMPLED
        starts = [span.start_time_unix_nano for span in spans]
        ends = [span.end_time_unix_nano for span in spans]
        past = max(starts) >= PAST or max(ends) >= PAST
        if not high and not past and 0 not in starts:
            return self._whole(min(starts), max(ends))
        earliest = latest = 0
        for start, end in zip(starts, ends, strict=True):
            if earliest == 0 or start < earliest:
                earliest = start
            if latest == 0 or end > latest:
                latest = end
            if past:
                duration = wrapped_ms(earliest, latest)
            else:
                nanoseconds = latest - earliest
                duration = nanoseconds // _NS_PER_MS if nanoseconds >= 0 else whole_ms(nanoseconds)
            if (low < duration <= high) if high else (duration > low):
                return Decision.SAMPLED
        return Decision.NOT_SAMPLED
