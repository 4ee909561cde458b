"""What the tail-sampling stage queues for export: kept spans (and late spans of kept traces),
run through the processors listed after tail_sampling in its pipeline, if any."""

from __future__ import annotations

import functools
import itertools
import logging
from collections import defaultdict
from collections.abc import Set as AbstractSet
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.processors.tail_sampling.quarantine import Quarantine
from edgeagent.processors.tail_sampling.records import Row
from edgeagent.signals import Payload, Signal
from otel.shape import TRACES
from sampler.trace import Trace

log = logging.getLogger(__name__)
# a kept trace as parsed for export: per batch key its spans came with, the trace of those spans
Pieces = list[tuple[bytes, Trace]]


def by_batch_key(trace: Trace, rows: list[Row], quarantine: Quarantine) -> Pieces:
    """The trace in pieces by the batch keys of its parts (`rows`), so that its spans leave with
    the metadata they came with (metadata_keys), as they do when exported as stored. Nearly
    always one piece: the trace itself; else each piece is parsed from its parts again."""
    keys = list(dict.fromkeys(row[1] for row in rows))
    if len(keys) <= 1:
        return [(keys[0] if keys else b"", trace)]
    parse = functools.partial(quarantine.batches_of, trace.trace_id, rows)
    return [(key, Trace(trace.trace_id, raw=[row[3] for row in rows if row[1] == key], parse=parse)) for key in keys]


class LaterProcessors:
    def __init__(self, processors: list[Any]):
        self.processors = processors

    def __bool__(self) -> bool:
        return bool(self.processors)

    def late(self, parts: list[bytes], items: int) -> tuple[bytes, int] | None:
        """The export body of late spans of kept traces: as they came, unless processors follow."""
        if not self.processors:
            return b"".join(parts), items
        return self.run([ExportTraceServiceRequest.FromString(part) for part in parts])

    def run(self, resource_spans: list[Any]) -> tuple[bytes, int] | None:
        """Run the processors on kept spans (resource groups or whole requests); (body, items), or
        None when they leave nothing."""
        request = ExportTraceServiceRequest()
        for part in resource_spans:
            if isinstance(part, ExportTraceServiceRequest):
                TRACES.groups_of(request).extend(TRACES.groups_of(part))
            else:
                TRACES.groups_of(request).append(part)
        payload = Payload.from_message(Signal.TRACES, request)
        for processor in self.processors:
            processed = processor.process(payload)
            if processed is None:
                return None
            payload = processed
        return (payload.serialized(), payload.items) if payload.items else None

    def exports(self, decisions: dict[bytes, bool], records: dict[bytes, list[Row]], kept: dict[bytes, Pieces],
                checked: AbstractSet[bytes], quarantine: Quarantine) -> list[tuple[bytes, int, bytes]]:
        """(body, items, batch key) per batch key for the kept traces of `decisions`, after the processors.

        `kept` holds kept traces as parsed for their decision (by_batch_key); the others are their parts
        (`records`), each parsed here for the processors, or checked for its framing when there
        are none (Quarantine.part_ok; a part that fails is quarantined). Without processors those
        go out as the bytes they are: serialized requests concatenated are one request holding
        all their resource groups."""
        by_key: dict[bytes, dict[bytes, list[Any]]] = defaultdict(lambda: defaultdict(list))  # key: trace: parts
        as_stored: dict[bytes, tuple[list[bytes], int]] = {}
        part_ok = quarantine.part_ok
        for trace_id in itertools.compress(decisions, decisions.values()):
            rows = records.get(trace_id, [])
            pieces = kept.get(trace_id)
            if pieces is not None:
                for batch_key, piece in pieces:
                    by_key[batch_key][trace_id].extend(piece.batches)
                continue
            if not self.processors:
                for row in rows:
                    if part_ok(trace_id, row, trace_id in checked):
                        bodies, count = as_stored.get(row[1], ([], 0))
                        bodies.append(row[3])
                        as_stored[row[1]] = (bodies, count + row[2])
                continue
            for row in rows:
                request = quarantine.parse_part(trace_id, row)
                if request is not None:
                    by_key[row[1]][trace_id].append(request)
        out = [(b"".join(bodies), items, batch_key) for batch_key, (bodies, items) in as_stored.items()]
        failures: list[Exception] = []
        for batch_key, traces in by_key.items():
            refused: dict[bytes, Exception] = {}
            out += [(body, items, batch_key) for body, items in self._processed(traces, refused)]
            for trace_id, error in refused.items():
                reason = f"processors after tail_sampling failed: {error}"
                for row in records.get(trace_id, []):
                    if row[1] == batch_key:
                        quarantine.note_part(trace_id, row, reason, quiet=True)
            failures += refused.values()
        if failures:
            log.error("processors after tail_sampling failed on kept traces; their spans are kept in the dead-letter "
                      "store", exc_info=failures[0],
                      extra={"processor": quarantine.processor_id, "traces": len(failures)})
        return out

    def _processed(self, traces: dict[bytes, list[Any]], refused: dict[bytes, Exception]) -> list[tuple[bytes, int]]:
        """The traces of one batch key through the processors, together; when that fails, each on
        its own, so that a trace they fail on (noted in `refused`) costs only itself."""
        try:
            processed = self.run([part for parts in traces.values() for part in parts])
            return [processed] if processed is not None else []
        except Exception as exc:  # noqa: BLE001 - a failing processor must not stop the decisions
            if len(traces) == 1:
                refused.update(dict.fromkeys(traces, exc))
                return []
        return [out for trace_id, parts in traces.items() for out in self._processed({trace_id: parts}, refused)]
