"""Send telemetry with the real OpenTelemetry Python SDK exporters (gRPC and HTTP)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


def _exporters(kind: str, transport: str, port: int, **options):
    """gRPC over TLS when `credentials` is given, HTTPS when `certificate_file` is; plaintext otherwise."""
    if transport == "grpc":
        if kind == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Exporter
        elif kind == "metrics":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Exporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Exporter
        return Exporter(endpoint=f"127.0.0.1:{port}", insecure="credentials" not in options, **options)
    if kind == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Exporter
    elif kind == "metrics":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Exporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as Exporter
    scheme = "https" if "certificate_file" in options else "http"
    return Exporter(endpoint=f"{scheme}://127.0.0.1:{port}/v1/{kind}", **options)


def send_spans(transport: str, port: int, count: int, service: str = "e2e", batch: int = 512,
               must_deliver: bool = False, **options) -> set[bytes]:
    """Send `count` spans; returns their span ids (8 bytes each) as the upstream will see them.

    The SDK drops a batch it could not export (after its retries, within its 10 s deadline) and its
    force_flush still says True; `must_deliver` makes that an error here, where the spans were lost."""
    exporter = _exporters("traces", transport, port, **options)
    if must_deliver:
        exporter = _Delivering(exporter)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=max(count, batch) + 1,
                                                   max_export_batch_size=batch, schedule_delay_millis=100))
    tracer = provider.get_tracer("edgeagent.tests")
    ids = set()
    for index in range(count):
        with tracer.start_as_current_span(f"op-{index}", attributes={"index": index}) as span:
            ids.add(span.get_span_context().span_id.to_bytes(8, "big"))
    assert provider.force_flush(60_000), "the SDK could not flush its spans"
    provider.shutdown()
    if must_deliver:
        assert not exporter.failed, f"the SDK gave up on {len(exporter.failed)} exports ({sum(exporter.failed)} spans)"
    return ids


class _Delivering(SpanExporter):
    """A span exporter that remembers the size of every batch the wrapped one failed to export."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.failed: list[int] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.failed.append(len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def send_metrics(transport: str, port: int, points: int = 3, service: str = "e2e") -> None:
    """Export one counter with `points` attribute sets (data points) once."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(_exporters("metrics", transport, port), export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])
    counter = provider.get_meter("edgeagent.tests").create_counter("requests")
    for index in range(points):
        counter.add(1, {"route": f"/r{index}", "transport": transport})
    provider.shutdown()  # collects and exports exactly once


def send_logs(transport: str, port: int, count: int = 5, service: str = "e2e") -> None:
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(BatchLogRecordProcessor(_exporters("logs", transport, port),
                                                              schedule_delay_millis=100))
    logger = logging.getLogger(f"edgeagent.tests.sdk.{transport}")
    logger.propagate = False
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for index in range(count):
        logger.info("record %d over %s", index, transport)
    assert provider.force_flush(60_000)
    logger.removeHandler(handler)
    provider.shutdown()
