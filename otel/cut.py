"""Cut a serialized OTLP export request into requests of at most `max_items` items and about
`max_bytes` bytes, on its bytes.

Items are what otelcol counts: spans, log records, metric data points. Every OTLP request has the
same three levels: groups (resource_spans/metrics/logs, field 1 of the request), each holding
scopes (field 2), each holding its items (spans, log records or metrics: field 2 again). A part
is a request of whole groups' and scopes' other fields (resource, scope, schema URL) around a
share of the items' bytes, so nothing is parsed and nothing is copied but into the parts: a
record of millions of empty spans costs its own size again, where building messages cost
twice what parsing it takes. A metric with more points than fit is cut into copies of itself
that carry a share of its points each (its other fields, temporality included, in every copy).

Groups and scopes without items are dropped, as otelcol's split drops them; a metric without
points is kept.

Size: a part holds at most `max_bytes` of items and of the group, scope and metric fields around
them, give or take the tags and lengths of those (a few bytes each) and the fields of the group
and scope it opens last, unless a single item (a span, a log record, a data point) is larger;
that one goes in a part of its own.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate

from otel.wire import WireError, field_at, length_delimited, read_varint

GROUPS = 1  # a request's resource_spans / resource_metrics / resource_logs
CHILDREN = 2  # a group's scopes, a scope's spans / metrics / log records
CHILD_KEY = CHILDREN << 3 | 2
METRIC_DATA = frozenset((5, 7, 9, 10, 11))  # Metric: gauge, sum, histogram, exponential_histogram, summary
POINTS = 1  # data_points, in each of them
_TAG_AND_LENGTH = 6  # a field's tag and the varint of a length below 2 GiB, at most

Slot = tuple[int, int]  # group index, scope index: which scope of the request a piece comes from


class _Parts:
    """Fills parts of at most `max_items` items and about `max_bytes` bytes one after the other."""

    def __init__(self, max_items: int, max_bytes: int):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.out: list[tuple[bytes, int]] = []
        self.count = 0
        self.size = 0  # bytes of the part being filled
        # of the part being filled: per group, its header and its scopes (header, pieces of items)
        self._groups: list[tuple[bytes, list[tuple[bytes, list[bytes]]]]] = []
        self._slot: Slot | None = None

    def room(self, size: int = 0) -> tuple[int, int]:
        """(items, bytes) the part being filled has room for, after flushing it when it is full or
        `size` more bytes do not fit; the bytes are never fewer than `size`: an item too large for
        any part goes alone."""
        if self.count >= self.max_items or (self.count and self.size + size > self.max_bytes):
            self.flush()
        return self.max_items - self.count, max(self.max_bytes - self.size, size)

    def add(self, slot: Slot, group_header: bytes, scope_header: bytes, piece: bytes, items: int) -> None:
        if slot != self._slot:
            if self._slot is None or slot[0] != self._slot[0]:
                self._groups.append((group_header, []))
                self.size += len(group_header)
            self._groups[-1][1].append((scope_header, []))
            self.size += len(scope_header)
            self._slot = slot
        self._groups[-1][1][-1][1].append(piece)
        self.count += items
        self.size += len(piece)

    def flush(self) -> None:
        if self._groups:
            body = b"".join(
                length_delimited(GROUPS, header + b"".join(
                    length_delimited(CHILDREN, scope_header + b"".join(pieces)) for scope_header, pieces in scopes))
                for header, scopes in self._groups)
            self.out.append((body, self.count))
        self._groups, self._slot, self.count, self.size = [], None, 0, 0


def cut(body: bytes, max_items: int, metrics: bool, max_bytes: int = 1 << 62) -> list[tuple[bytes, int]]:
    """(part, items) for parts of at most `max_items` items (at least one) and about `max_bytes`
    bytes, in order; raises WireError for bytes this walk cannot read (callers fall back to parsing
    them)."""
    parts = _Parts(max(1, max_items), max(1, max_bytes))
    for g, (group_header, group_start, group_end) in enumerate(_level(body, 0, len(body), GROUPS)):
        for s, (scope_header, start, end) in enumerate(_level(body, group_start, group_end, CHILDREN)):
            slot = (g, s)
            if metrics:
                for number, field_start, _, field_end in _fields(body, start, end):
                    if number == CHILDREN:
                        _add_metric(parts, slot, group_header, scope_header, body, field_start, field_end)
            else:
                _add_items(parts, slot, group_header, scope_header, body, start, end)
    parts.flush()
    return parts.out


def _level(data: bytes, start: int, end: int, number: int) -> Iterator[tuple[bytes, int, int]]:
    """For each field `number` of the message data[start:end] (a group, or a scope): its fields
    other than its children, joined (its header), and where its value lies. Other fields of the
    message are dropped, as a parse keeps them only as unknown fields of a message no one reads."""
    for found, _, value_start, value_end in _fields(data, start, end):
        if found == number:
            header = [data[child_start:child_end]
                      for child, child_start, _, child_end in _fields(data, value_start, value_end)
                      if child != CHILDREN]
            yield b"".join(header), value_start, value_end


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    pos = start
    while pos < end:
        field = field_at(data, pos, end)
        pos = field[3]
        yield field


def _add_items(parts: _Parts, slot: Slot, group_header: bytes, scope_header: bytes, data: bytes,
               start: int, end: int) -> None:
    """A scope's spans or log records, in runs that fill the parts."""
    for run_start, run_end, items in _runs(data, start, end, parts):
        parts.add(slot, group_header, scope_header, data[run_start:run_end], items)


def _runs(data: bytes, start: int, end: int, parts: _Parts) -> Iterator[tuple[int, int, int]]:
    """Runs of consecutive items of a scope, each as many and as large as the part being filled has
    room for."""
    room = space = 0
    run_start = run_end = count = 0
    pos = start
    while pos < end:
        number, field_start, _, pos = _field(data, pos, end)
        if number != CHILDREN:  # a scope field (its header) between items: not in the run
            continue
        # a run ends before a scope field, when the part is full, or before an item that does not fit
        if count and (field_start != run_end or count == room or pos - run_start > space):
            yield run_start, run_end, count
            count = 0
        if not count:
            room, space = parts.room(pos - field_start)
            run_start = field_start
        run_end = pos
        count += 1
    if count:
        yield run_start, run_end, count


def _field(data: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """field_at, with an item's key and a length of one or two bytes read inline (nearly every item)."""
    if data[pos] == CHILD_KEY:
        length = data[pos + 1] if pos + 1 < end else 0x80
        if length < 0x80:
            field_end = pos + 2 + length
        elif pos + 2 < end and data[pos + 2] < 0x80:
            field_end = pos + 3 + (length & 0x7F | data[pos + 2] << 7)
        else:
            return field_at(data, pos, end)
        if field_end > end:
            raise WireError("a field runs past its message")
        return CHILDREN, pos, -1, field_end  # the value's start: not needed by the walk
    return field_at(data, pos, end)


def _add_metric(parts: _Parts, slot: Slot, group_header: bytes, scope_header: bytes, data: bytes,
                start: int, end: int) -> None:
    """A metric (its field data[start:end]): whole when its points fit, else cut into copies that
    carry a share of its points each."""
    value_start = read_varint(data, read_varint(data, start)[1])[1]  # after the metric's key and length
    header: list[bytes] = []
    points: list[bytes] = []
    data_header: list[bytes] = []
    kind = 0
    for number, field_start, inner_start, field_end in _fields(data, value_start, end):
        if number in METRIC_DATA:
            kind = number
            for point, point_start, _, point_end in _fields(data, inner_start, field_end):
                (points if point == POINTS else data_header).append(data[point_start:point_end])
        else:
            header.append(data[field_start:field_end])
    size = end - start  # too large with two points or more: cut, not flushed for
    room, space = parts.room(size if size <= parts.max_bytes or len(points) < 2 else 0)
    if len(points) <= room and size <= space:
        parts.add(slot, group_header, scope_header, data[start:end], len(points))
        return
    metric_header, kept = b"".join(header), b"".join(data_header)
    overhead = len(metric_header) + len(kept) + 2 * _TAG_AND_LENGTH
    ends = list(accumulate(map(len, points)))  # ends[i]: bytes of points[0..i]
    at = 0
    while at < len(points):
        before = ends[at - 1] if at else 0
        room, space = parts.room(overhead + ends[at] - before)
        # as many points as there is room for, at least one
        stop = bisect_right(ends, before + space - overhead, at + 1, min(len(points), at + room))
        share = points[at:stop]
        copy = metric_header + length_delimited(kind, kept + b"".join(share))
        parts.add(slot, group_header, scope_header, length_delimited(CHILDREN, copy), len(share))
        at = stop
