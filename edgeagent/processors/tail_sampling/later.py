"""The processors listed after tail_sampling in its pipeline: they run on kept spans (and late
spans of kept traces) before those are queued for export."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.signals import Payload, Signal
from otel.shape import TRACES


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
