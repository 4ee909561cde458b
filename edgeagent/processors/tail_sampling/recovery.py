"""The tail-sampling stage's start: its pending traces rebuilt from the buffer records.

Every record is read and cut again (sampler.split), with the facts policies judge traces by;
each trace in them is pending again, its first-seen time taken from its oldest record. Records
of earlier releases (one per trace part, key = trace id + sequence) are read the same way and
stored again as one record each, as this release cuts them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.processors.tail_sampling.records import RecordIndex
from edgeagent.queue.api import Corrupt, StoredRecord
from sampler.buffer import Times, merge_hints, merge_times
from sampler.sizing import trace_sizes
from sampler.split import Facts, split_body

KEY = struct.Struct(">Q")  # a buffer record's key: a sequence number
_OLD_KEY = struct.Struct(">16sQ")  # earlier releases stored a record per trace part: trace id + sequence
Rewrite = tuple[bytes, int, bytes]  # a record stored again: body, spans, batch key
Recovered = tuple[int, int, int, "Times | None", "int | None"]  # a trace: spans, bytes, first ms, times, hints


def sequence(key: bytes) -> int:
    """The sequence number in a buffer record's key (this release's, or an earlier one's)."""
    if len(key) == KEY.size:
        return KEY.unpack(key)[0]
    return _OLD_KEY.unpack(key)[1] if len(key) == _OLD_KEY.size else 0


def recover(rows: Iterable[StoredRecord | Corrupt], index: RecordIndex, facts: Callable[[], Facts],
            measure: bool = False) -> tuple[dict[bytes, Recovered], dict[bytes, str], dict[bytes, Rewrite], int]:
    """Rebuild `index` from the buffer records: the pending traces (trace id: spans, bytes, first
    enqueue time in ms, times, hints), the records that do not decode, the records to store
    again as cut now (a record of an earlier release, or one whose parts come out otherwise),
    and the last sequence number. A trace's bytes are measured as otelcol counts them
    (sampler.sizing) when `measure`, else its parts' lengths stand in. Runs in a worker thread
    before anything else touches the index (receivers start later)."""
    found: dict[bytes, Recovered] = {}
    corrupt: dict[bytes, str] = {}
    rewrites: dict[bytes, Rewrite] = {}
    last = 0
    for row in rows:
        last = max(last, sequence(row.key))
        if isinstance(row, Corrupt):
            corrupt[row.key] = row.reason
            continue
        read = facts()
        try:
            request = ExportTraceServiceRequest.FromString(row.body)
            body, parts = split_body(row.body, request, facts=read)
        except DecodeError as exc:
            corrupt[row.key] = f"not a trace request: {exc}"
            continue
        index.add(row.key, row.batch_key, [(trace_id, length, items) for trace_id, length, items, _ in parts])
        if body != row.body:
            rewrites[row.key] = (body, sum(items for _, _, items, _ in parts), row.batch_key)
        counted = trace_sizes(request, row.body) if measure else None
        for trace_id, length, items, _ in parts:
            if counted is not None:
                length = counted[trace_id]
            times, hints = read.times.get(trace_id), read.hints.get(trace_id)
            known = found.get(trace_id)
            if known is None:
                found[trace_id] = (items, length, row.enqueued_ms, times, hints)
            else:
                found[trace_id] = (known[0] + items, known[1] + length, min(known[2], row.enqueued_ms),
                                   merge_times(known[3], times), merge_hints(known[4], hints))
    return found, corrupt, rewrites, last
