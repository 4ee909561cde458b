"""Scopes in OTLP's deprecated resource field, moved where current OTLP has them, as pdata moves them.

Before OTLP 0.15 (2022) a resource held its spans, metrics and logs in
instrumentation_library_{spans,metrics,logs}, field 1000, since renamed scope_{spans,metrics,logs},
field 2: the same message on the wire. SDKs of that time still send field 1000. pdata reads it
and moves it to field 2 when a resource has nothing there (else drops it), so otelcol keeps the
data; the current messages no longer name it, so here it was an unknown field, the request
counted no item and was answered OK with nothing queued.

Only a request that counted no item is looked at (codec), and `migrated` rewrites it on the wire:
every other byte stays as it came. The walk is Python, a field at a time, so it stops after
MAX_FIELDS: a request of that many resources and not one item is no SDK's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from edgeagent.errors import BadRequestError
from otel.wire import LEN, field_at, length_delimited, read_varint, varint

DEPRECATED = 1000  # instrumentation_library_{spans,metrics,logs} in every Resource{Spans,Metrics,Logs}
SCOPES = 2  # scope_{spans,metrics,logs}
TAG = varint(DEPRECATED << 3 | LEN)  # b"\xc2\x3e": a body without these bytes has no field 1000
MAX_FIELDS = 10_000

_Change = Callable[[bytes, int, int, int, int], bytes | None]  # (data, number, field start, value start, end)


def migrated(body: bytes) -> bytes:
    """`body` (an Export*ServiceRequest) with each resource's field 1000 moved to field 2, or
    dropped where field 2 is given; `body` itself when it holds none, or is no message the walk
    can read (the parse has said why already). BadRequestError past MAX_FIELDS fields."""
    budget = [MAX_FIELDS]
    try:
        rewritten = _rewritten(body, 0, len(body), _resource(budget), budget)
    except ValueError:  # otel.wire's WireError: as the parse read it
        return body
    return body if rewritten is None else rewritten


def _fields(data: bytes, start: int, end: int, budget: list[int]) -> Iterator[tuple[int, int, int, int]]:
    pos = start
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise BadRequestError(f"a request of more than {MAX_FIELDS} resources and scopes without one item")
        field = field_at(data, pos, end)
        yield field
        pos = field[3]


def _rewritten(data: bytes, start: int, end: int, change: _Change, budget: list[int]) -> bytes | None:
    """data[start:end] with each field `change` rewrites replaced; None if none is."""
    out: list[bytes] = []
    copied = start  # data[copied:pos] is still to go out as it came
    for number, pos, value_start, value_end in _fields(data, start, end, budget):
        new = change(data, number, pos, value_start, value_end)
        if new is not None:
            out += (data[copied:pos], new)
            copied = value_end
    if not out:
        return None
    out.append(data[copied:end])
    return b"".join(out)


def _resource(budget: list[int]) -> _Change:
    """A request's resource_{spans,metrics,logs} field (1), rewritten if it holds field 1000."""
    def change(data: bytes, number: int, pos: int, start: int, end: int) -> bytes | None:
        if number != 1 or _wire(data, pos) != LEN or data.find(TAG, start, end) < 0:
            return None
        current = any(field[0] == SCOPES for field in _fields(data, start, end, budget))
        inner = _rewritten(data, start, end, lambda d, n, p, s, e: _scopes(d, n, p, s, e, current), budget)
        return None if inner is None else length_delimited(1, inner)
    return change


def _scopes(data: bytes, number: int, pos: int, start: int, end: int, current: bool) -> bytes | None:
    if number != DEPRECATED or _wire(data, pos) != LEN:
        return None
    return b"" if current else length_delimited(SCOPES, data[start:end])


def _wire(data: bytes, pos: int) -> int:
    return read_varint(data, pos)[0] & 7
