"""Buffer records and parts of the tail-sampling stage that do not decode, held until the next
move takes them to the dead-letter store.

A record that does not decode (or does not match its index) is quarantined whole, under its
key. A part that does not parse, found when a policy or keeping its trace parses it (or, sent as
stored, that is not whole resource groups), or that the
processors after tail_sampling fail on (later.py), is quarantined on its own, under record key +
trace id, and never sent. Each is logged once, with
its key. The event loop notes them; the move's transaction (on the writer thread) gets copies.
"""

from __future__ import annotations

import logging

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from edgeagent.processors.tail_sampling.records import Row
from edgeagent.queue.api import StageTransaction
from edgeagent.signals import Signal
from otel.wire import WireError, fields

log = logging.getLogger(__name__)
BadPart = tuple[str, bytes, int, bytes]  # reason, bytes, spans, batch key
_GROUP_KEY = 1 << 3 | 2  # ExportTraceServiceRequest.resource_spans, length-delimited


class Quarantine:
    def __init__(self, processor_id: str):
        self.processor_id = processor_id
        self.records: dict[bytes, str] = {}  # record key: reason
        self.parts: dict[bytes, BadPart] = {}  # record key + trace id: the part

    def note_records(self, corrupt: dict[bytes, str]) -> None:
        """Remember records to quarantine with the next move."""
        for key, reason in corrupt.items():
            if key not in self.records:
                self.records[key] = reason
                self._log(key, reason)

    def parse_part(self, trace_id: bytes, row: Row) -> ExportTraceServiceRequest | None:
        """The request of one part of a trace, or None (and the part quarantined by the next move)
        when it does not parse, or was quarantined already."""
        if row[0] + trace_id in self.parts:
            return None
        try:
            return ExportTraceServiceRequest.FromString(row[3])
        except DecodeError as exc:
            self.note_part(trace_id, row, f"not a trace request: {exc}")
            return None

    def batches_of(self, trace_id: bytes, rows: list[Row], body: bytes) -> list[ResourceSpans]:
        """The resource groups of one part of a trace; none (and the part quarantined by the
        next move) when it does not parse."""
        try:
            return list(ExportTraceServiceRequest.FromString(body).resource_spans)
        except DecodeError as exc:
            row = next(row for row in rows if row[3] is body)
            self.note_part(trace_id, row, f"not a trace request: {exc}")
            return []

    def note_part(self, trace_id: bytes, row: Row, reason: str, quiet: bool = False) -> None:
        """`quiet`: the caller logs (once for many parts)."""
        key, batch_key, spans, body = row
        if key + trace_id not in self.parts:
            self.parts[key + trace_id] = (reason, body, spans, batch_key)
            if not quiet:
                self._log(key + trace_id, reason)

    def part_ok(self, trace_id: bytes, row: Row, checked: bool = False) -> bool:
        """Whether a part of a kept trace may be sent as stored: not quarantined and, unless
        `checked` (its trace was parsed for its decision), whole resource groups end to end (a
        part that is not is quarantined). Its content needs no parse: the record it was cut from
        was parsed when it was written (from a request parsed at ingest) or recovered at start,
        and the mapping gives back what was written; what could still go wrong is where a part
        was cut, and a slice at the wrong place does not frame."""
        if row[0] + trace_id in self.parts:
            return False
        if checked:
            return True
        body = row[3]
        try:
            groups = fields(body, 0, len(body))
        except WireError as exc:
            self.note_part(trace_id, row, f"not a trace request: {exc}")
            return False
        if not groups or any(body[start] != _GROUP_KEY for _, start, _, _ in groups):
            self.note_part(trace_id, row, "not a trace request: a field other than resource spans")
            return False
        return True

    def snapshot(self) -> tuple[dict[bytes, str], dict[bytes, BadPart]]:
        """Copies for a move's transaction (the writer thread): these belong to the event loop."""
        return dict(self.records), dict(self.parts)

    @staticmethod
    def write(writer: StageTransaction, table: object, records: dict[bytes, str], parts: dict[bytes, BadPart]) -> None:
        """Inside a move's transaction: the records and parts to the dead-letter store."""
        for key, reason in records.items():
            writer.quarantine(table, key, reason)
        for key, (reason, body, spans, batch_key) in parts.items():  # on its own in the dead-letter store
            writer.put(table, key, Signal.TRACES, body, spans, batch_key, compress=False)
            writer.quarantine(table, key, reason)

    def moved(self, records: dict[bytes, str], parts: dict[bytes, BadPart]) -> None:
        """The move with this snapshot was committed."""
        for key in records:
            del self.records[key]
        for key in parts:
            del self.parts[key]

    def _log(self, key: bytes, reason: str) -> None:
        log.error("a buffered trace record does not decode; it is quarantined in the dead-letter store",
                  extra={"processor": self.processor_id, "key": key.hex(), "error": reason})
