"""What policies read of a trace, computed at most once per decision and shared.

Walking a trace's batches and scopes costs more than most policies' work per span, and an
attribute policy can skip a batch whose serialized bytes do not contain its key. So while
`decide` runs the policies on a trace, the first policy to ask for the trace's spans as one
list, or for its batches serialized, computes them and the others reuse them. A policy
evaluated on its own computes them itself. The shared values live on the trace (`Trace.view`)
from `start_deciding` to `stop_deciding`: a trace is decided by one caller at a time.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel.shape import TRACES
from sampler.trace import Trace

_SPANS, _SERIALIZED = 0, 1  # slots of Trace.view
# a trace with spans to share: one to parse from its bytes, or batches at hand (not empty)
_PARSE, _BATCHES = operator.attrgetter("_parse"), operator.attrgetter("_batches")
# a finder that finds more says "anywhere": a match that common rules out few traces, and mapping
# each place onto its trace costs Python time
MAX_PLACES = 64


def find_all(pattern: re.Pattern[bytes], data: bytes, found: list[int]) -> bool:
    """Append where `pattern` matches in `data`; False once `found` holds more than MAX_PLACES.
    A compiled pattern of a literal (or a literal byte and a class) searches in C at twice the
    speed of a loop of bytes.find, which walks two- and three-byte needles byte by byte."""
    for match in pattern.finditer(data):
        found.append(match.start())
        if len(found) > MAX_PLACES:
            return False
    return True


class SparingFinder:
    """A finder (sampler.split.Finder) left out while it cannot tell: after `give_up` requests in a
    row in which it found more than MAX_PLACES places (a value most traces hold), it answers
    "anywhere" without searching, but for one request in `probe`, whose search finds out whether
    that still holds. "Anywhere" is always a true answer (the policy then reads the trace at its
    decision, as it would have), so this spares only a search that rules nothing out: a regex
    scan of the whole request that gives up after MAX_PLACES matches."""

    def __init__(self, find: Callable[[bytes], list[int] | None], give_up: int = 8, probe: int = 64):
        self.find = find
        self.give_up, self.probe = give_up, probe
        self._gave_up = 0  # requests in a row it could not tell
        self._skipped = 0  # requests since its last search, while it is left out

    def __call__(self, raw: bytes) -> list[int] | None:
        if self._gave_up >= self.give_up:
            self._skipped += 1
            if self._skipped < self.probe:
                return None
            self._skipped = 0
        places = self.find(raw)
        self._gave_up = self._gave_up + 1 if places is None else 0
        return places


def _spans(trace: Trace) -> list:
    return TRACES.items_in(trace.batches)


def _serialized(trace: Trace) -> list:
    return [batch.SerializeToString() for batch in trace.batches]


def _shared(trace: Trace, slot: int, compute: Callable[[Trace], list]) -> list:
    view = trace.view
    if view is None:
        return compute(trace)
    value = view[slot]
    if value is None:
        value = view[slot] = compute(trace)
    return value


def spans_of(trace: Trace) -> list[Span]:
    """The trace's spans in arrival order (batch, then scope, then span)."""
    return _shared(trace, _SPANS, _spans)


def serialized_batches(trace: Trace) -> list[bytes]:
    """Each batch of the trace as protobuf bytes, in the order of trace.batches."""
    return _shared(trace, _SERIALIZED, _serialized)


def start_deciding(traces: Sequence[Trace]) -> list[Trace]:
    """`decide` is about to run the policies on these traces: let them share what they compute.
    Returns those that have spans to share, for stop_deciding: a trace decided without its spans
    (Trace.unread) has none, and skipping it here spares an object per trace in a round."""
    sharing = [*filter(_PARSE, traces), *filter(_BATCHES, traces)]  # in C; a trace may be in both
    for trace in sharing:
        trace.view = [None, None]
    return sharing


def stop_deciding(traces: Iterable[Trace]) -> None:
    for trace in traces:
        trace.view = None
