"""Cut a traces request into one request per trace id, resource and scope kept with each span."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, islice, repeat
from operator import attrgetter, ge, ne, not_, or_, sub

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel.shape import TRACES
from otel.wire import WireError, field_at, fields, length_delimited, read_varint, varint

# field numbers: ExportTraceServiceRequest.resource_spans, ResourceSpans.scope_spans, ScopeSpans.spans
_GROUP_FIELD, _SCOPE_FIELD, _SPAN_FIELD = 1, 2, 2
_TRACE_ID, _PARENT_ID = attrgetter("trace_id"), attrgetter("parent_span_id")
_START, _END = attrgetter("start_time_unix_nano"), attrgetter("end_time_unix_nano")


def split_by_trace(request: ExportTraceServiceRequest) -> Iterator[tuple[bytes, ExportTraceServiceRequest, int, bool]]:
    """(trace id, request holding only its spans, span count, whether a root span is among them).
    A request of one trace is not copied."""
    by_trace = TRACES.runs_by_key(request, lambda span: span.trace_id)
    for trace_id, runs in by_trace.items():
        count = sum(len(spans) for _, _, spans in runs)
        root = any(not span.parent_span_id for _, _, spans in runs for span in spans)
        yield trace_id, request if len(by_trace) == 1 else TRACES.assemble(request, runs), count, root


TracePart = tuple[bytes, int, int, bool]  # trace id, length of its bytes, span count, has a root span


def split_serialized(raw: bytes, request: ExportTraceServiceRequest, roots: bool = True,
                     facts: Facts | None = None) -> list[tuple[bytes, bytes, int, bool]]:
    """As split_by_trace, each part serialized (split_body, the body cut at the parts' lengths)."""
    body, parts = split_body(raw, request, roots, facts)
    out = []
    at = 0
    for trace_id, length, count, root in parts:
        out.append((trace_id, body[at:at + length], count, root))  # all of a bytes object is itself
        at += length
    return out


def split_body(raw: bytes, request: ExportTraceServiceRequest, roots: bool = True,
               facts: Facts | None = None) -> tuple[bytes, list[TracePart]]:
    """As split_by_trace, the parts serialized one after the other in one body (a request
    holding them all), and for each (trace id, its length in the body, span count, whether a
    root span is among them). Parts are cut out of `raw` (the serialized `request`) at the byte
    level, so no span is copied into a new message, and are copied once, into the body. Spans
    of a trace that follow each other in a scope (as SDKs write them) are one slice. A request
    of one trace is `raw` itself.

    The parsed request gives each span's trace id and parent; the bytes give where each span
    starts and ends. Falls back to the message path when the two disagree (bytes that protobuf
    accepts but this walk does not). `roots=False`: the caller does not ask whether a part holds
    a root span (parts may then say False although they hold one), which saves reading each
    span's parent.

    `facts`, when given, gets what policies judge traces by besides their parts (Facts). A
    trace the byte walk could not place gets none."""
    times = facts.times if facts is not None and facts.read_times else None
    try:
        places = _places(raw, request, roots, times)
    except WireError:
        places = None
    if places is None:
        if facts is not None:
            facts.times.clear()  # read from a walk that stopped half way
        serialized = [(trace_id, part.SerializeToString(), count, root)
                      for trace_id, part, count, root in split_by_trace(request)]
        return (b"".join(part for _, part, _, _ in serialized),
                [(trace_id, len(part), count, root) for trace_id, part, count, root in serialized])
    by_trace, headers, order, spans = places
    if facts is not None and facts.finders:
        _find_hints(raw, by_trace, order, spans, facts)
    if len(by_trace) == 1:
        trace_id, (_, count, root) = next(iter(by_trace.items()))
        return raw, [(trace_id, len(raw), count, root)]
    return _body(raw, by_trace, headers)


_GROUP_KEY, _SCOPE_KEY = _GROUP_FIELD << 3 | 2, _SCOPE_FIELD << 3 | 2


def _body(raw: bytes, by_trace: ByTrace, headers: list[tuple[bytes, list[bytes]]]) -> tuple[bytes, list[TracePart]]:
    """The parts one after the other, joined once. A trace whose spans are one run (the common
    case) is a group holding a scope holding the run: its pieces go into the join as they are."""
    view = memoryview(raw)
    pieces: list[bytes | memoryview] = []
    parts: list[TracePart] = []
    for trace_id, (runs, count, root) in by_trace.items():
        if len(runs) != 1:
            part = _assemble(raw, headers, runs)
            pieces.append(part)
            parts.append((trace_id, len(part), count, root))
            continue
        g, s, start, end = runs[0]
        group_header, scope_headers = headers[g]
        scope_header = scope_headers[s]
        # key and length as one piece; a length of two bytes (the usual) written inline
        scope_length = len(scope_header) + end - start
        scope_key = (bytes((_SCOPE_KEY, scope_length & 0x7F | 0x80, scope_length >> 7))
                     if 0x80 <= scope_length < 0x4000 else bytes((_SCOPE_KEY,)) + varint(scope_length))
        group_length = len(group_header) + len(scope_key) + scope_length
        group_key = (bytes((_GROUP_KEY, group_length & 0x7F | 0x80, group_length >> 7))
                     if 0x80 <= group_length < 0x4000 else bytes((_GROUP_KEY,)) + varint(group_length))
        pieces += (group_key, group_header, scope_key, scope_header, view[start:end])
        parts.append((trace_id, len(group_key) + group_length, count, root))
    return b"".join(pieces), parts


def _assemble(raw: bytes, headers: list[tuple[bytes, list[bytes]]], runs: list[Run]) -> bytes:
    """The part of a trace whose spans are in several runs: a group per run of groups, a scope per
    run of scopes."""
    body = []
    group_parts: list[bytes] = []
    last_group = last_scope = -1
    scope_slices: list[bytes] = []
    for g, s, start, end in runs:
        if (g, s) != (last_group, last_scope) and scope_slices:
            scope_header = headers[last_group][1][last_scope]
            group_parts.append(length_delimited(_SCOPE_FIELD, scope_header + b"".join(scope_slices)))
            scope_slices = []
        if g != last_group and group_parts:
            body.append(length_delimited(_GROUP_FIELD, headers[last_group][0] + b"".join(group_parts)))
            group_parts = []
        last_group, last_scope = g, s
        scope_slices.append(raw[start:end])
    group_parts.append(length_delimited(_SCOPE_FIELD, headers[last_group][1][last_scope] + b"".join(scope_slices)))
    body.append(length_delimited(_GROUP_FIELD, headers[last_group][0] + b"".join(group_parts)))
    return b"".join(body)


Run = tuple[int, int, int, int]  # group index, scope index, byte range of consecutive spans of a trace
TraceTimes = dict[bytes, tuple[int, int] | None]  # trace id: earliest start, latest end of its spans
# a time from here on (2262) can wrap otelcol's int64 difference of a trace's times round:
# latency judges a trace with such a time by its spans (sampler.policies.latency)
PAST = 1 << 63
# where in a request's bytes a policy's match may begin; None: it cannot tell (anywhere)
Finder = Callable[[bytes], list[int] | None]
# whether a span matches a policy for certain (so its trace does): Facts.confirms
Confirm = Callable[[Span], bool]


@dataclass
class Facts:
    """What a split reads of each trace of a request besides its parts, for the policies that
    judge traces by it (sampler.trace: Trace.times and Trace.hints).

    times: each trace's (earliest start, latest end) over its spans, or None when some span has
        no start time; read when `read_times`.
    hints: per trace, the bits of the `finders` (bit, finder) whose finder found a place in the
        trace's spans where a match may begin; a place outside every trace's spans (a resource
        or scope) sets the bit for all. A bit left clear says no span of the trace can match.
    confirms: for a finder's bit, a function that tells of a span whether it matches, and a
        second bit. Each span a place of that finder lies in is then parsed and asked: the bit
        stays only on traces with a span that matches, and those get the second bit too, which
        says the trace matches for certain. A finder finds a place in every span that matches,
        so the bit left clear still says none does. A place outside the spans sets the first
        bit alone, for all."""

    read_times: bool = False
    finders: Sequence[tuple[int, Finder]] = ()
    confirms: Mapping[int, tuple[Confirm, int]] = field(default_factory=dict)
    times: TraceTimes = field(default_factory=dict)
    hints: dict[bytes, int] = field(default_factory=dict)
ByTrace = dict[bytes, tuple[list[Run], int, bool]]  # trace id: its runs, span count, has a root span
# every run in byte order (for bisecting), where each starts and ends and its trace id, after a
# run that ends before the first byte (no place is in it)
RunOrder = tuple[list[int], list[int], list[bytes]]
SpanOrder = tuple[list[int], list[int]]  # where each span starts (its key) and ends, in byte order
Places = tuple[ByTrace, list[tuple[bytes, list[bytes]]], RunOrder, SpanOrder]


def _places(raw: bytes, request: ExportTraceServiceRequest, roots: bool = True,
            times: TraceTimes | None = None) -> Places | None:
    """For each trace id: its runs (group index, scope index, byte range of consecutive spans),
    span count and whether it has a root span; for each group its fields other than scopes
    (resource, schema URL) and for each scope its fields other than spans, as bytes; and the
    runs and the spans in byte order."""
    groups = request.resource_spans
    by_trace: ByTrace = {}
    order: RunOrder = ([-1], [0], [b""])
    span_starts: list[int] = []
    span_ends: list[int] = []
    headers: list[tuple[bytes, list[bytes]]] = []
    g = -1
    for number, _, group_start, group_end in fields(raw, 0, len(raw)):
        if number != _GROUP_FIELD:
            continue  # not a field of the request: dropped, as the message path drops it
        g += 1
        if g >= len(groups):
            return None
        group_header, scope_headers, s = [], [], -1
        for number, field_start, scope_start, scope_end in fields(raw, group_start, group_end):
            if number != _SCOPE_FIELD:
                group_header.append(raw[field_start:scope_end])
                continue
            s += 1
            spans = groups[g].scope_spans[s].spans if s < len(groups[g].scope_spans) else None
            if spans is None:
                return None
            scope_header, starts, ends, cuts = _spans_and_header(raw, scope_start, scope_end)
            if len(starts) != len(spans):
                return None
            scope_headers.append(b"".join(scope_header))
            _runs(by_trace, order, g, s, spans, starts, ends, cuts, roots, times)
            span_starts += starts
            span_ends += ends
        headers.append((b"".join(group_header), scope_headers))
    if g + 1 != len(groups):
        return None
    return by_trace, headers, order, (span_starts, span_ends)


_SPAN_KEY = _SPAN_FIELD << 3 | 2


def _spans_and_header(raw: bytes, start: int, end: int) -> tuple[list[bytes], list[int], list[int], list[int]]:
    """A scope's fields other than spans, where each span starts (key included) and ends, and the
    spans that follow such a field after some span (no run of spans may reach over it: the
    field would be in the run's bytes beside the header). The loop runs once per span, so
    spans are read inline and only their starts recorded: a span ends where the next field
    starts. Anything else goes through `fields`."""
    header: list[bytes] = []
    starts: list[int] = []
    breaks: list[tuple[int, int]] = []  # a field other than a span: spans before it, its start
    append = starts.append
    pos = start
    try:
        while pos < end:
            if raw[pos] != _SPAN_KEY:
                field_end = field_at(raw, pos, end)[3]
                header.append(raw[pos:field_end])
                breaks.append((len(starts), pos))
                pos = field_end
                continue
            append(pos)
            length = raw[pos + 1]
            if length < 0x80:
                pos += 2 + length
                continue
            high = raw[pos + 2]
            if high < 0x80:  # spans of 128 bytes to 16 KiB: a two-byte length
                pos += 3 + (length & 0x7F | high << 7)
            else:
                length, value_start = read_varint(raw, pos + 1)
                pos = value_start + length
    except IndexError:
        raise WireError("truncated") from None
    if pos > end:  # pos only grows: a span that ran past its scope ended the loop
        raise WireError("a span runs past its scope")
    ends = starts[1:]
    if starts:
        ends.append(end)
    cuts = []
    for count, at in reversed(breaks):  # a span followed by another field ends where it starts
        if count:
            ends[count - 1] = at
            if count < len(starts):
                cuts.append(count)
    return header, starts, ends, cuts


def _runs(by_trace: ByTrace, order: RunOrder, g: int, s: int, spans: Sequence[Span], starts: list[int],
          ends: list[int], cuts: list[int], with_roots: bool = True, times: TraceTimes | None = None) -> None:
    """Add one scope's spans to by_trace and order, consecutive spans of a trace as one byte range
    (and their times to `times`)."""
    if not spans:
        return
    if with_roots or times is not None:
        spans = list(spans)  # each span's wrapper made once, not once per field read
    ids = list(map(_TRACE_ID, spans))
    roots = list(map(not_, map(_PARENT_ID, spans))) if with_roots else None
    # where a run ends: the spans whose trace id differs from the one before, found in C
    run_ends = list(compress(range(1, len(ids)), map(ne, islice(ids, 1, None), ids)))
    run_ends.append(len(ids))
    if cuts:  # rare: a scope field between spans
        run_ends = sorted(set(run_ends).union(cuts))
    if times is not None:
        _add_times(times, spans, ids, run_ends)
    run_starts, run_stops, owners = order
    first = 0
    for end in run_ends:
        trace_id = ids[first]
        start, stop = starts[first], ends[end - 1]
        run = (g, s, start, stop)
        run_starts.append(start)
        run_stops.append(stop)
        owners.append(trace_id)
        root = roots is not None and any(roots[first:end])
        known = by_trace.get(trace_id)
        if known is None:
            by_trace[trace_id] = ([run], end - first, root)
        else:
            known[0].append(run)
            by_trace[trace_id] = (known[0], known[1] + end - first, known[2] or root)
        first = end


def _add_times(times: TraceTimes, spans: Sequence[Span], ids: list[bytes], ends: list[int]) -> None:
    """Merge each run's earliest start and latest end into its trace's, the runs' extremes found
    in C. A start of 0 (unset, the least a fixed64 can be) makes a trace's times unknown, and so
    does a run's earliest start or latest end from PAST on: the trace's running duration may
    wrap round in otelcol. (Left out, as a pass over every span's start would cost: a first
    span that ends a century and more before it starts, past 2262, before an earlier start.)"""
    firsts = [0, *ends[:-1]]
    sizes = list(map(sub, ends, firsts))
    # each run's spans taken in turn from one pass over the spans: min and max use up each
    # islice before the next is made (no per-run list, no list of every span's time)
    lows = list(map(min, map(islice, repeat(map(_START, spans)), sizes)))
    highs = list(map(max, map(islice, repeat(map(_END, spans)), sizes)))
    run_ids = list(map(ids.__getitem__, firsts))
    if max(highs) < PAST and max(lows) < PAST:
        if min(lows) and len(set(run_ids)) == len(run_ids) and times.keys().isdisjoint(run_ids):
            # the common case: one run a trace, every start set
            times.update(zip(run_ids, zip(lows, highs, strict=True), strict=True))
            return
        late: Iterable[bool] = repeat(False, len(run_ids))
    else:
        late = map(or_, map(ge, highs, repeat(PAST)), map(ge, lows, repeat(PAST)))
    for trace_id, low, high, past in zip(run_ids, lows, highs, late, strict=True):
        if past:
            times[trace_id] = None
        elif trace_id not in times:
            times[trace_id] = (low, high) if low else None
        else:
            known = times[trace_id]
            times[trace_id] = None if known is None or not low else (min(known[0], low), max(known[1], high))


def _find_hints(raw: bytes, by_trace: ByTrace, order: RunOrder, spans: SpanOrder, facts: Facts) -> None:
    """Set facts.hints: each finder's places mapped onto the runs of spans that hold them."""
    starts, stops, owners = order
    hints = dict.fromkeys(by_trace, 0)
    everywhere = 0
    for bit, find in facts.finders:
        places = find(raw)
        if places is None:
            everywhere |= bit
            continue
        # each place's run: the last to start at or before it (the first, ending at 0, when none does)
        runs = list(map(sub, map(bisect_right, repeat(starts), places), repeat(1)))
        if any(map(ge, places, map(stops.__getitem__, runs))):  # outside the spans: in a resource or scope
            everywhere |= bit
            continue
        confirm = facts.confirms.get(bit)
        if confirm is not None:
            _confirm(raw, places, map(owners.__getitem__, runs), spans, hints, bit, *confirm)
            continue
        for trace_id in set(map(owners.__getitem__, runs)):
            hints[trace_id] |= bit
    if everywhere:
        for trace_id in hints:
            hints[trace_id] |= everywhere
    facts.hints = hints


def _confirm(raw: bytes, places: list[int], owners: Iterable[bytes], spans: SpanOrder, hints: dict[bytes, int],
             bit: int, confirm: Confirm, sure_bit: int) -> None:
    """Ask `confirm` of each span a place is in (once a span; `owners`: each place's trace): set
    both bits on the trace of a span it confirms. A span that does not parse on its own keeps
    the first bit, as a place does unconfirmed."""
    starts, ends = spans
    asked: set[int] = set()
    for place, trace_id in zip(places, owners, strict=True):
        span = bisect_right(starts, place) - 1  # a place in a run of spans is in one of them
        if span in asked or hints[trace_id] & sure_bit:
            continue
        asked.add(span)
        body = read_varint(raw, starts[span] + 1)[1]  # after the span's key and length
        try:
            matches = confirm(Span.FromString(raw[body:ends[span]]))
        except DecodeError:
            hints[trace_id] |= bit
            continue
        if matches:
            hints[trace_id] |= bit | sure_bit
