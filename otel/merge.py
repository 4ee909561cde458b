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
Items are never parsed: 0.23 us a span against 2.2 us through the messages (24 records of 512).

Two groups or scopes are the same when their headers are the same bytes. A resource written two
ways (attributes in another order) stays two groups, which is still the same data. Bytes this walk
cannot read raise WireError; callers then merge the parsed messages.
"""

from __future__ import annotations

from collections.abc import Sequence

from otel.cut import CHILD_KEY, CHILDREN, GROUPS
from otel.wire import LEN, WireError, field_at, varint

Scopes = dict[bytes, list[memoryview]]  # scope header: runs of item bytes
_GROUP_KEY = bytes((GROUPS << 3 | LEN,))
_SCOPE_KEY = bytes((CHILDREN << 3 | LEN,))


def merge(requests: Sequence[bytes]) -> bytes:
    """One serialized request holding every group, scope and item of `requests` (of one signal)."""
    if len(requests) == 1:
        return requests[0]
    groups: dict[bytes, Scopes] = {}
    for request in requests:
        view = memoryview(request)
        pos, end = 0, len(request)
        while pos < end:
            number, at, start, pos = field_at(request, pos, end)
            if number == GROUPS:
                _check_key(request, at, _GROUP_KEY)
                _add_group(request, view, start, pos, groups)
            # another field of the request: dropped, as a parse keeps it only as an unknown field
    return _framed(groups)


def _framed(groups: dict[bytes, Scopes]) -> bytes:
    """The groups, each around its scopes, each around its runs of items: joined once (each key and
    length worked out from the sizes, so that no level copies the one inside it)."""
    pieces: list[bytes | memoryview] = []
    for header, scopes in groups.items():
        group_at = len(pieces)
        pieces += (b"", header)  # the group's key and length go first, once its size is known
        size = len(header)
        for scope_header, runs in scopes.items():
            scope_size = len(scope_header) + sum(map(len, runs))
            key = _SCOPE_KEY + varint(scope_size)
            pieces += (key, scope_header)
            pieces += runs
            size += len(key) + scope_size
        pieces[group_at] = _GROUP_KEY + varint(size)
    return b"".join(pieces)


def _check_key(data: bytes, at: int, key: bytes) -> None:
    """A group, scope or item must be a message (length-delimited): another wire type under its number
    is bytes a parse refuses, so the walk refuses them too (and the caller's parse says why)."""
    if data[at] != key[0]:
        raise WireError("a message field of another wire type")


def _add_group(data: bytes, view: memoryview, start: int, end: int, groups: dict[bytes, Scopes]) -> None:
    header: list[memoryview] = []
    scopes: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        number, field_start, value_start, pos = field_at(data, pos, end)
        if number == CHILDREN:
            _check_key(data, field_start, _SCOPE_KEY)
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
        if data[pos] == CHILD_KEY and pos + 2 < end:  # an item, its length in one or two bytes (nearly all)
            length = data[pos + 1]
            if length < 0x80:
                after = pos + 2 + length
            elif data[pos + 2] < 0x80:
                after = pos + 3 + (length & 0x7F | data[pos + 2] << 7)
            else:
                after = field_at(data, pos, end)[3]
            if after > end:
                raise WireError("a field runs past its message")
        else:
            number, _, _, after = field_at(data, pos, end)
            if number != CHILDREN:
                header.append(view[pos:after])
                pos = after
                continue
            _check_key(data, pos, _SCOPE_KEY)
        if pos != run_end:  # an item after a header field, or the first
            if run_end > run_start:
                runs.append(view[run_start:run_end])
            run_start = pos
        run_end = pos = after
    if run_end > run_start:
        runs.append(view[run_start:run_end])
    scopes.setdefault(b"".join(header), []).extend(runs)
