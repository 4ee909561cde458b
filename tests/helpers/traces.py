"""Traces sent with the real OpenTelemetry SDK over OTLP/HTTP, built to match sampling policies."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags, set_span_in_context


class Client:
    """The OpenTelemetry SDK sending to the agent over OTLP/HTTP."""

    def __init__(self, port: int):
        self.provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"), max_queue_size=100_000,
            max_export_batch_size=512, schedule_delay_millis=50))
        self.tracer = self.provider.get_tracer("tail-sampling-tests")

    def trace(self, kind: str, children: int = 3) -> tuple[int, set[int]]:
        """One trace: kind "error" (a failing child), "vip" (a root attribute) or "plain"."""
        spans = set()
        attributes = {"customer": "vip" if kind == "vip" else "regular"}
        with self.tracer.start_as_current_span("checkout", attributes=attributes) as root:
            spans.add(root.get_span_context().span_id)
            for index in range(children):
                with self.tracer.start_as_current_span(f"step-{index}") as child:
                    spans.add(child.get_span_context().span_id)
                    if kind == "error" and index == children - 1:
                        child.set_status(Status(StatusCode.ERROR, "payment declined"))
        return root.get_span_context().trace_id, spans

    def late_span(self, trace_id: int, parent: int) -> int:
        context = set_span_in_context(NonRecordingSpan(SpanContext(trace_id, parent, True, TraceFlags(1))))
        with self.tracer.start_as_current_span("late", context=context) as span:
            return span.get_span_context().span_id

    def flush(self) -> None:
        assert self.provider.force_flush(60_000)

    def close(self) -> None:
        self.flush()
        self.provider.shutdown()


def span_ids_by_trace(upstream) -> dict[int, set[int]]:
    """What the upstream received: trace id -> span ids, as integers (the SDK's form)."""
    out: dict[int, set[int]] = {}
    for span in upstream.spans():
        out.setdefault(int.from_bytes(span.trace_id, "big"), set()).add(int.from_bytes(span.span_id, "big"))
    return out
