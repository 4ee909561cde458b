"""Trace and span ids of the lengths OTLP gives them, as otelcol's pdata reads them.

A trace id is 16 bytes and a span id 8, or empty (no id). pdata refuses a request holding any other
length, wherever an id is: a span's trace, span and parent span ids, a link's, a log record's, an
exemplar's. otelcol's receivers answer such a request with a 400, and an otelcol upstream answers a
batch holding one with a 400 too, so a request holding one must be refused where it arrives, before
it is merged with other clients' data.

Reading an id through protobuf's Python objects makes a wrapper object per span and a bytes object
per id: about 0.5 us a span, five times the parse. So spans and log records are read as lite.py
reads trace ids: the body is parsed again with a type that knows only the ids (the rest is an
unknown field, discarded), and each scope serialized again is its items' ids in canonical form.
When every item has ids of the right lengths (or none), that form is one of a few fixed byte
layouts an item, each opening with the item's length: one regular expression reads them all in C
(about 0.2 us a span in all). A scope that is not all such items (a span with links, an id of
another length) is read id by id. A request of many items is read in parts of at most CHUNK items
cut from its bytes (otel/cut.py), so the lite messages take a bounded share of memory beside the
parsed request (a flood of 2M empty spans took 400 MiB more at once). Exemplars are found by a lite
parse too, down to their ids: a metric whose points hold none is passed over in C (walking every
point of a request of 1,500 without exemplars took 4 times its parse).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, combinations
from operator import attrgetter
from typing import Any

from otel.cut import cut
from otel.wire import WireError

_TRACE_IDS, _SPAN_IDS = frozenset((0, 16)), frozenset((0, 8))
_TRACE_ID, _SPAN_ID, _PARENT = attrgetter("trace_id"), attrgetter("span_id"), attrgetter("parent_span_id")
_LINKS, _EXEMPLARS = attrgetter("links"), attrgetter("exemplars")
_ITEM_KEY = 0x12  # a scope's items: field 2, length-delimited
CHUNK = 16_384  # items a lite parse holds at once
Ids = tuple[tuple[str, int, int], ...]  # (field name, number, length) of an item's ids, by number


# a lite type: message name -> its fields (name, number, the message type it holds, None for bytes;
# a field of a message type is repeated unless its name starts with "single_")
Schema = dict[str, tuple[tuple[str, int, str | None], ...]]


def _lite_parse(package: str, schema: Schema) -> Callable[[bytes], Any]:
    """The parse of `schema`'s "Request": a request's shape down to the fields it names (the rest is
    an unknown field, discarded by the caller)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # with the first request

    field_type = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name=f"edgeagent_{package}.proto", package=package, syntax="proto3")
    for message, fields in schema.items():
        added = file.message_type.add(name=message)
        for field, number, of in fields:
            if of is None:
                added.field.add(name=field, number=number, type=field_type.TYPE_BYTES, label=field_type.LABEL_OPTIONAL)
                continue
            single = field.startswith("single_")
            added.field.add(name=field.removeprefix("single_"), number=number, type=field_type.TYPE_MESSAGE,
                            label=field_type.LABEL_OPTIONAL if single else field_type.LABEL_REPEATED,
                            type_name=f".{package}.{of}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Request")).FromString


_ENVELOPE: Schema = {"Scope": (("items", 2, "Item"),), "Group": (("scopes", 2, "Scope"),),
                     "Request": (("groups", 1, "Group"),)}


def _lite_type(name: str, ids: Ids, links: bool) -> Callable[[bytes], Any]:
    """The request's shape down to its items' ids (and a span's links' ids)."""
    item = tuple((field, number, None) for field, number, _ in ids)
    schema: Schema = {"Item": item + ((("links", 13, "Link"),) if links else ()), **_ENVELOPE}
    if links:
        schema["Link"] = (("trace_id", 1, None), ("span_id", 2, None))
    return _lite_parse(f"ids{name}", schema)


def _layouts(ids: Ids) -> re.Pattern[bytes]:
    """Any number of items, each with any of `ids` at its length and nothing else, in canonical form."""
    by_size: dict[int, list[bytes]] = {}
    for count in range(len(ids), -1, -1):
        for present in combinations(ids, count):
            size = sum(2 + length for _, _, length in present)
            by_size.setdefault(size, []).append(b"".join(
                re.escape(bytes((number << 3 | 2, length))) + b".{%d}" % length for _, number, length in present))
    items = b"|".join(re.escape(bytes((size,))) + b"(?:" + b"|".join(bodies) + b")" for size, bodies in by_size.items())
    return re.compile(b"(?:" + re.escape(bytes((_ITEM_KEY,))) + b"(?:" + items + b"))*", re.DOTALL)


# a metric's field and its points' exemplars field, for the kinds of data whose points have exemplars
_EXEMPLAR_HOLDERS = (("gauge", 5, 5), ("sum", 7, 5), ("histogram", 9, 8), ("exponential_histogram", 10, 11))


def _lite_metrics_type() -> Callable[[bytes], Any]:
    """A metrics request's shape down to its exemplars' ids: what a request without exemplars
    leaves is an empty point each, 2 bytes, which tells it apart in C (ByteSize)."""
    schema: Schema = {"Exemplar": (("span_id", 4, None), ("trace_id", 5, None))}
    for kind, _, exemplars in _EXEMPLAR_HOLDERS:
        schema[f"Point_{kind}"] = (("exemplars", exemplars, "Exemplar"),)
        schema[f"Data_{kind}"] = (("data_points", 1, f"Point_{kind}"),)
    schema["Metric"] = tuple((f"single_{kind}", number, f"Data_{kind}") for kind, number, _ in _EXEMPLAR_HOLDERS)
    schema["Scope"] = (("metrics", 2, "Metric"),)
    return _lite_parse("idsmetrics", {**schema, "Group": _ENVELOPE["Group"], "Request": _ENVELOPE["Request"]})


_SPAN: Ids = (("trace_id", 1, 16), ("span_id", 2, 8), ("parent_span_id", 4, 8))
_LOG_RECORD: Ids = (("trace_id", 9, 16), ("span_id", 10, 8))


def prepare() -> None:
    """Build the lite types now (codec.load_ahead)."""
    _lite("traces")
    _lite("logs")
    _lite_metrics()


@functools.cache
def _lite_metrics() -> Callable[[bytes], Any]:
    return _lite_metrics_type()


@functools.cache
def _lite(kind: str) -> tuple[Callable[[bytes], Any], re.Pattern[bytes]]:
    """The lite type's parse and the layouts of its items, for traces or logs."""
    if kind == "traces":
        return _lite_type("Span", _SPAN, links=True), _layouts(_SPAN)
    return _lite_type("LogRecord", _LOG_RECORD, links=False), _layouts(_LOG_RECORD)


def invalid_id(kind: str, request: Any, items: int, raw: bytes | None = None) -> str | None:
    """What is wrong with the ids of `request`, a traces, metrics or logs export request (`kind` says
    which) of `items` items, parsed from `raw` when given, in pdata's words; None when every id is
    empty or of its length."""
    body = request.SerializeToString() if raw is None else raw
    if kind == "metrics":
        return _ids_of(_exemplars(body))
    try:
        parts = [part for part, _ in cut(body, CHUNK, metrics=False)] if items > CHUNK else [body]
    except (WireError, IndexError):  # protobuf read it: read it whole, as it did
        parts = [body]
    for part in parts:
        wrong = _invalid_in(kind, part)
        if wrong is not None:
            return wrong
    return None


def _invalid_in(kind: str, body: bytes) -> str | None:
    parse, layouts = _lite(kind)
    lite = parse(body)
    lite.DiscardUnknownFields()
    for group in lite.groups:
        for scope in group.scopes:
            if layouts.fullmatch(scope.SerializeToString()) is None:
                wrong = _ids_of(scope.items, kind == "traces")
                if wrong is not None:
                    return wrong
    return None


def _exemplars(body: bytes) -> list[Any]:
    """The exemplars of a metrics request, read from a lite parse: a kind of data whose points hold
    none (ByteSize 2 a point) is passed over without a look at its points."""
    lite = _lite_metrics()(body)
    lite.DiscardUnknownFields()
    found: list[Any] = []
    for group in lite.groups:
        for scope in group.scopes:
            for metric in scope.metrics:
                for kind, _, _ in _EXEMPLAR_HOLDERS:
                    if not metric.HasField(kind):
                        continue
                    points = getattr(metric, kind).data_points
                    if getattr(metric, kind).ByteSize() != 2 * len(points):
                        found += chain.from_iterable(filter(None, map(_EXEMPLARS, points)))
    return found


def _ids_of(holders: Sequence[Any], spans: bool = False) -> str | None:
    """For spans (and their links), log records and exemplars: each has a trace id and a span id."""
    wrong = _check(holders, _TRACE_ID, _TRACE_IDS, "TraceID") or _check(holders, _SPAN_ID, _SPAN_IDS, "SpanID")
    if wrong is None and spans:
        links = list(chain.from_iterable(filter(None, map(_LINKS, holders))))
        wrong = _check(holders, _PARENT, _SPAN_IDS, "SpanID") or _ids_of(links)
    return wrong


def _check(holders: Iterable[Any], get: Callable[[Any], bytes], lengths: frozenset[int], name: str) -> str | None:
    if set(map(len, map(get, holders))) <= lengths:
        return None
    return f"unmarshal: invalid {name} length"
