"""Merge serialized OTLP export requests of one signal into one, on their bytes.

What the queue's records hold are serialized requests, and the exporter sends many of them as one.
Parsing each, moving its items into one message and serializing that again cost half the CPU of
draining a backlog. The three signals' requests have the same three levels (otel/cut.py):
groups (field 1), each a resource and schema URL around its scopes (field 2), each a scope and
schema URL around its items (field 2 again). So the merge walks the groups and scopes of each
request and gathers the runs of item bytes of each scope (views of the requests, copied once,
into the merged one) under its group's and scope's other fields (their header, as bytes); then
it frames every group once around its scopes. Items of the same resource end up in one group, and
of the same scope in one scope, in the order first seen, as a merge of the messages gives them.
Items are never parsed: 0.4 us a span against 2.3 us through the messages (24 records of 512).

Two groups or scopes are the same when their headers are the same bytes. A resource written two
ways (attributes in another order) stays two groups, which is still the same data. Bytes this walk
cannot read raise WireError; callers then merge the parsed messages.
"""

from __future__ import annotations

from collections.abc import Sequence

from otel.cut import CHILD_KEY, CHILDREN, GROUPS
from otel.wire import WireError, field_at, length_delimited

Scopes = dict[bytes, list[memoryview]]  # scope header: runs of item bytes


def merge(requests: Sequence[bytes]) -> bytes:
    """One serialized request holding every group, scope and item of `requests` (of one signal)."""
    if len(requests) == 1:
        return requests[0]
    groups: dict[bytes, Scopes] = {}
    for request in requests:
        view = memoryview(request)
        pos, end = 0, len(request)
        while pos < end:
            number, _, start, pos = field_at(request, pos, end)
            if number == GROUPS:
                _add_group(request, view, start, pos, groups)
            # another field of the request: dropped, as a parse keeps it only as an unknown field
    return b"".join(
        length_delimited(GROUPS, header + b"".join(
            length_delimited(CHILDREN, scope_header + b"".join(runs)) for scope_header, runs in scopes.items()))
        for header, scopes in groups.items())


def _add_group(data: bytes, view: memoryview, start: int, end: int, groups: dict[bytes, Scopes]) -> None:
    header: list[memoryview] = []
    scopes: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        number, field_start, value_start, pos = field_at(data, pos, end)
        if number == CHILDREN:
            scopes.append((value_start, pos))
        else:
            header.append(view[field_start:pos])
    into = groups.setdefault(b"".join(header), {})
    for scope_start, scope_end in scopes:
        _add_scope(data, view, scope_start, scope_end, into)


def _add_scope(data: bytes, view: memoryview, start: int, end: int, scopes: Scopes) -> None:
    """The scope's header and its items, in runs of consecutive ones."""
    header: list[memoryview] = []
    runs: list[memoryview] = []
    run_start = run_end = -1
    pos = start
    while pos < end:
        field_start = pos
        if data[pos] == CHILD_KEY and pos + 2 < end:  # an item, its length in one or two bytes (nearly all)
            length = data[pos + 1]
            if length < 0x80:
                pos += 2 + length
            elif data[pos + 2] < 0x80:
                pos += 3 + (length & 0x7F | data[pos + 2] << 7)
            else:
                pos = field_at(data, pos, end)[3]
            if pos > end:
                raise WireError("a field runs past its message")
            number = CHILDREN
        else:
            number, _, _, pos = field_at(data, pos, end)
        if number != CHILDREN:
            header.append(view[field_start:pos])
        elif field_start == run_end:
            run_end = pos
        else:
            if run_end > run_start:
                runs.append(view[run_start:run_end])
            run_start, run_end = field_start, pos
    if run_end > run_start:
        runs.append(view[run_start:run_end])
    scopes.setdefault(b"".join(header), []).extend(runs)
