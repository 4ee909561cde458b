"""Where the tail-sampling stage's pending spans are on disk: one buffer record per request.

A request's spans of pending traces are stored as one record: the request cut by trace
(sampler.split), the parts concatenated. Each part is a request of one trace's spans, so any
run of parts is a request too. LMDB stores a large value as one run of pages: one put per
request and, once all its traces are decided, one delete, where a record per trace part cost
~50 B-tree inserts and deletes (about 15 times the writer's CPU).

This index (event loop only) knows each record's parts in stored order, (trace id, length,
span count), as three columns (a round's passes over a record read a column in C, with no
tuple per part to pick apart, allocate when the record is stored or free when it goes), and
each pending trace's records. Deciding reads the records that hold the due traces, cuts them
at those lengths, and plans one move: a record whose traces are all decided is deleted; one
that still holds pending parts is rewritten with just those (the move's transaction does both,
with the kept spans' append to the export queues). The index follows only once that commit
succeeded (`apply`). After a restart it is rebuilt from the records by cutting each again
(`parts_of`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field

Part = tuple[bytes, int, int]  # trace id, length in the record, spans
Row = tuple[bytes, bytes, int, bytes]  # record key, batch key, spans, the part's bytes
Decided = set[bytes] | dict[bytes, bool]  # decided trace ids


@dataclass(slots=True)
class Record:
    batch_key: bytes
    trace_ids: tuple[bytes, ...]  # of its parts, in stored order
    lengths: tuple[int, ...]
    spans: tuple[int, ...]

    @property
    def parts(self) -> list[Part]:
        return list(zip(self.trace_ids, self.lengths, self.spans, strict=True))

    @parts.setter
    def parts(self, parts: list[Part]) -> None:
        self.trace_ids, self.lengths, self.spans = _columns(parts)


def _columns(parts: list[Part]) -> tuple[tuple[bytes, ...], tuple[int, ...], tuple[int, ...]]:
    if not parts:
        return (), (), ()
    trace_ids, lengths, spans = zip(*parts, strict=True)
    return trace_ids, lengths, spans


@dataclass
class Move:
    """What settling a set of decided traces does to the buffer records."""

    deletes: list[bytes] = field(default_factory=list)
    rewrites: dict[bytes, tuple[bytes, int, bytes, list[Part]]] = field(default_factory=dict)  # key: body, spans,
    # batch key, the parts that stay


class RecordIndex:
    def __init__(self) -> None:
        self.records: dict[bytes, Record] = {}
        # trace id: keys of the records holding its parts; tuples, which the garbage collector
        # stops tracking at its first pass (a list per pending trace made every full pass walk them)
        self.traces: dict[bytes, tuple[bytes, ...]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def add(self, key: bytes, batch_key: bytes, parts: list[Part]) -> None:
        self.add_columns(key, batch_key, *_columns(parts))

    def add_columns(self, key: bytes, batch_key: bytes, trace_ids: tuple[bytes, ...], lengths: tuple[int, ...],
                    spans: tuple[int, ...]) -> None:
        """`add` of the parts' columns, side by side."""
        self.records[key] = Record(batch_key, trace_ids, lengths, spans)
        traces = self.traces
        if traces.keys().isdisjoint(trace_ids):  # the common case, every trace new: one update in C
            traces.update(zip(trace_ids, itertools.repeat((key,))))
            return
        for trace_id in trace_ids:
            keys = traces.get(trace_id)
            if keys is None:
                traces[trace_id] = (key,)
            elif keys[-1] != key:
                traces[trace_id] = (*keys, key)

    def keys_of(self, trace_ids: Iterable[bytes]) -> set[bytes]:
        """The records that hold parts of these traces."""
        return set(itertools.chain.from_iterable(map(self.traces.get, trace_ids, itertools.repeat(()))))

    def rows(self, bodies: dict[bytes, bytes], wanted: set[bytes] | dict[bytes, bool]) -> dict[bytes, list[Row]]:
        """The parts of the `wanted` traces in these records (key: body), per trace, in order.
        A record whose body is not as long as its parts is left out (the caller quarantines it)."""
        out: dict[bytes, list[Row]] = {}
        records, is_wanted = self.records, wanted.__contains__
        for key, body in bodies.items():
            record = records.get(key)
            if record is None:
                continue
            trace_ids, spans = record.trace_ids, record.spans
            # where each part starts, and which are wanted, in C: a record holds tens of traces
            # and a round reads it for the few a policy reads
            starts = list(itertools.accumulate(record.lengths, initial=0))
            batch_key = record.batch_key
            for at in itertools.compress(range(len(trace_ids)), map(is_wanted, trace_ids)):
                out.setdefault(trace_ids[at], []).append((key, batch_key, spans[at], body[starts[at]:starts[at + 1]]))
        return out

    def fits(self, key: bytes, body: bytes) -> bool:
        record = self.records.get(key)
        return record is not None and sum(record.lengths) == len(body)

    def partly_decided(self, decided: Decided, bodies: dict[bytes, bytes], keys: Iterable[bytes]) -> list[bytes]:
        """Of the records `keys` (those holding the decided traces' parts), those that also hold parts
        of pending traces and whose bodies are not in `bodies`: a move stores them again without
        the decided parts, so it needs them."""
        records = self.records
        return [key for key in sorted(keys) if key not in bodies and key in records
                and not all(map(decided.__contains__, records[key].trace_ids))]

    def plan(self, decided: Decided, bodies: dict[bytes, bytes], keys: Iterable[bytes]) -> Move:
        """The move that takes the decided traces' parts out of the records `keys` (those holding
        them): a record with only decided parts is deleted, read or not; one that keeps pending
        parts is stored again without the others, when it could be read (`bodies`), else left as
        it is."""
        move = Move()
        records = self.records
        for key in sorted(keys):
            record = records.get(key)
            if record is None:
                continue
            if all(map(decided.__contains__, record.trace_ids)):  # in C: the common case
                move.deletes.append(key)
                continue
            body = bodies.get(key)
            if body is None:
                continue
            parts = record.parts
            stay = [part for part in parts if part[0] not in decided]
            pieces, offset = [], 0
            for trace_id, length, _ in parts:
                if trace_id not in decided:
                    pieces.append(body[offset:offset + length])
                offset += length
            move.rewrites[key] = (b"".join(pieces), sum(spans for _, _, spans in stay), record.batch_key, stay)
        return move

    def apply(self, move: Move, decided: Decided) -> None:
        """The move was committed: the index follows."""
        records, traces = self.records, self.traces
        for key in move.deletes:
            records.pop(key, None)
        for key, (_, _, _, stay) in move.rewrites.items():
            records[key].parts = stay
        held = list(map(traces.pop, decided, itertools.repeat(())))
        # most decided traces were only in records the move deleted: nothing is left of them (in C)
        for trace_id, keys in itertools.compress(zip(decided, held, strict=True),
                                                 map(operator.not_, map(records.keys().isdisjoint, held))):
            # a record the move could not read (or one stored since) keeps the trace's parts: the
            # trace stays indexed there
            kept = tuple(key for key in keys if key in records and trace_id in records[key].trace_ids)
            if kept:
                traces[trace_id] = kept

    def forget(self, key: bytes) -> None:
        """A record was quarantined whole: its parts are gone."""
        record = self.records.pop(key, None)
        if record is None:
            return
        for trace_id in record.trace_ids:
            keys = self.traces.get(trace_id)
            if keys is not None and key in keys:
                rest = tuple(other for other in keys if other != key)
                if rest:
                    self.traces[trace_id] = rest
                else:
                    del self.traces[trace_id]
