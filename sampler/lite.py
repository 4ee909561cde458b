"""Each span's trace id (and times) read in C: a second parse of a request with a type that knows
nothing else of a span.

Reading a field of every span through protobuf's Python objects makes a wrapper object per span
and a Python value per field: on requests fresh off the wire (cold caches) that cost about twice
the parse itself for trace ids, four times for ids and times. Instead the request is parsed
again as `Request` below, whose spans hold only those fields: their values are what protobuf
reads (the last of a repeated field wins) and everything else is an unknown field, dropped.
Serialized again, each scope is then the canonical encoding of its spans: one fixed-size row a
span when every span has a 16-byte trace id (and both times set), which `struct` unpacks in
C, a scope's rows in one call. A scope whose rows are not all of that size (an id of another
length, a time of 0) is read the old way by the caller (None here).

The rows are checked at their stride: the first row starts at 0 and its length byte says the
row is exactly the stride long, so the next row starts one stride on, and so on; a row with a
length byte of the stride's, a trace id key and length, and the times' keys where the layout
has them holds exactly those fields.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto


def _request_type(with_times: bool) -> Callable[[bytes], Any]:
    """ExportTraceServiceRequest's shape down to spans of trace_id (and start and end times)."""
    name = "Timed" if with_times else "Ids"
    file = descriptor_pb2.FileDescriptorProto(name=f"edgeagent_lite_{name}.proto", package=f"lite{name}",
                                              syntax="proto3")
    span = file.message_type.add(name="Span")
    span.field.add(name="trace_id", number=1, type=_FIELD.TYPE_BYTES, label=_FIELD.LABEL_OPTIONAL)
    if with_times:
        span.field.add(name="start", number=7, type=_FIELD.TYPE_FIXED64, label=_FIELD.LABEL_OPTIONAL)
        span.field.add(name="end", number=8, type=_FIELD.TYPE_FIXED64, label=_FIELD.LABEL_OPTIONAL)
    for message, field, number, of in (("Scope", "spans", 2, "Span"), ("Group", "scope_spans", 2, "Scope"),
                                       ("Request", "resource_spans", 1, "Group")):
        file.message_type.add(name=message).field.add(name=field, number=number, type=_FIELD.TYPE_MESSAGE,
                                                      label=_FIELD.LABEL_REPEATED, type_name=f".lite{name}.{of}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"lite{name}.Request")).FromString


@dataclass(frozen=True)
class _Layout:
    parse: Callable[[bytes], Any]
    row: str  # a row's struct format
    marks: tuple[tuple[int, int], ...]  # (offset in the row, byte every row has there)

    def values(self, blob: bytes, count: int) -> list[Any] | None:
        """The values of `count` rows, row after row, or None when `blob` is not such rows."""
        stride = struct.calcsize("<" + self.row)
        if len(blob) != stride * count:
            return None
        for offset, byte in self.marks:
            if blob[offset::stride] != bytes((byte,)) * count:
                return None
        whole, rest = divmod(count, _CHUNK)
        chunk = _CHUNK * stride
        values = list(chain.from_iterable(map(_rows(self.row, _CHUNK).unpack_from, repeat(blob),
                                              range(0, whole * chunk, chunk))))
        if rest:
            values += _rows(self.row, rest).unpack_from(blob, whole * chunk)
        return values


_CHUNK = 32  # rows an unpack reads: a format per row count would take 50 KiB for 512 rows


@functools.lru_cache(maxsize=2 * _CHUNK)
def _rows(row: str, count: int) -> struct.Struct:
    """`count` rows as one format: an unpack reads them in C."""
    return struct.Struct("<" + row * count)


# a row: the span's key (field 2) and length, trace_id's key and length (16), the id[, start's
# key (field 7, fixed64) and value, end's key (field 8) and value]
_IDS = _Layout(_request_type(False), "4x16s", ((0, 0x12), (1, 18), (2, 0x0A), (3, 16)))
_TIMED = _Layout(_request_type(True), "4x16sxQxQ", ((0, 0x12), (1, 36), (2, 0x0A), (3, 16), (20, 0x39), (29, 0x41)))

SpanFacts = tuple[list[bytes], list[int] | None, list[int] | None]  # trace ids, start times, end times


class LiteRequest:
    """A request's spans as the lite type reads them, scope by scope."""

    def __init__(self, raw: bytes, with_times: bool):
        self._layout = _TIMED if with_times else _IDS
        self._groups = self._layout.parse(raw).resource_spans

    def scope(self, group: int, scope: int, count: int) -> SpanFacts | None:
        """The trace ids (and times) of the `count` spans of that scope, or None when they do not
        all fit the layout (or the scope is not there)."""
        if group >= len(self._groups) or scope >= len(scopes := self._groups[group].scope_spans):
            return None
        message = scopes[scope]
        message.DiscardUnknownFields()
        values = self._layout.values(message.SerializeToString(), count)
        if values is None:
            return None
        if self._layout is _IDS:
            return list(values), None, None
        return list(values[0::3]), list(values[1::3]), list(values[2::3])
