"""The three OTLP signals: request and response classes, item counting, splitting and merging.

A `Payload` carries one export request through the pipeline. It keeps the bytes the
client sent next to the parsed message, so a request that no processor changed is
stored exactly as received and never serialized again. Constant attributes that the
attributes processor adds to every record can travel next to those bytes, deferred, and be
added when someone looks (Payload.defer_attributes).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from edgeagent.appender import append_attributes
from otel.cut import cut
from otel.merge import merge
from otel.shape import LOGS, METRICS, TRACES, Shape
from otel.wire import WireError

if TYPE_CHECKING:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    ExportResponse = (trace_service_pb2.ExportTraceServiceResponse | metrics_service_pb2.ExportMetricsServiceResponse
                      | logs_service_pb2.ExportLogsServiceResponse)


class Signal(enum.IntEnum):
    TRACES = 1
    METRICS = 2
    LOGS = 3

    @classmethod
    def parse(cls, name: str) -> Signal:
        return _BY_NAME[name]

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def request_class(self) -> type[Message]:
        try:
            return _REQUEST[self]
        except KeyError:
            _import_messages()
            return _REQUEST[self]

    @property
    def response_class(self) -> type[ExportResponse]:
        try:
            return _RESPONSE[self]
        except KeyError:
            _import_messages()
            return _RESPONSE[self]

    @property
    def shape(self) -> Shape:
        """Where the request keeps its items (otel.shape)."""
        return _SHAPE[self]

    @property
    def item_name(self) -> str:
        """The otelcol metric suffix for this signal's items (spans, metric_points, log_records)."""
        return _ITEM_NAME[self]

    @property
    def grpc_service(self) -> str:
        return _GRPC_SERVICE[self]


_BY_NAME = {"traces": Signal.TRACES, "metrics": Signal.METRICS, "logs": Signal.LOGS}
_REQUEST: dict[Signal, type[Message]] = {}  # filled by _import_messages
_RESPONSE: dict[Signal, type[ExportResponse]] = {}


def _import_messages() -> None:
    """The request and response classes, imported when a signal's are first asked for (a request, a
    queue record): the OTLP message modules, with protobuf's runtime, are a tenth of the agent's
    start-up, which needs none of them. Asking again costs a dict lookup."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    _RESPONSE.update({Signal.TRACES: trace_service_pb2.ExportTraceServiceResponse,
                      Signal.METRICS: metrics_service_pb2.ExportMetricsServiceResponse,
                      Signal.LOGS: logs_service_pb2.ExportLogsServiceResponse})
    _REQUEST.update({Signal.TRACES: trace_service_pb2.ExportTraceServiceRequest,
                     Signal.METRICS: metrics_service_pb2.ExportMetricsServiceRequest,
                     Signal.LOGS: logs_service_pb2.ExportLogsServiceRequest})
_SHAPE = {Signal.TRACES: TRACES, Signal.METRICS: METRICS, Signal.LOGS: LOGS}
_ITEM_NAME = {Signal.TRACES: "spans", Signal.METRICS: "metric_points", Signal.LOGS: "log_records"}
_GRPC_SERVICE = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}


def count_items(signal: Signal, request: Any) -> int:
    """Items as otelcol counts them: spans, metric data points, log records."""
    return signal.shape.count(request)


def resource_groups(signal: Signal, request: Any) -> Any:
    """The repeated top-level field: resource_spans, resource_metrics or resource_logs."""
    return signal.shape.groups_of(request)


class Metadata(dict[str, str]):
    """Request metadata: each key's values joined with ';' (what from_context reads, as otelcol
    joins them), with the values themselves kept apart for what must tell `a;b` from `a` and `b`."""

    def __init__(self) -> None:
        super().__init__()
        self.lists: dict[str, list[str]] = {}

    def add(self, key: str, value: str) -> None:
        self.lists.setdefault(key, []).append(value)
        self[key] = f"{self[key]};{value}" if key in self else value


def metadata_values(metadata: dict[str, str], key: str) -> tuple[str, ...]:
    """The values of one metadata key: none when absent, else each value the request carried."""
    if isinstance(metadata, Metadata) and key in metadata.lists:
        return tuple(metadata.lists[key])
    return (metadata[key],) if key in metadata else ()


@dataclass
class Payload:
    """One export request of one signal, as bytes, as a message, or both."""

    signal: Signal
    items: int
    raw: bytes | None = None
    message: Any = None
    metadata: dict[str, str] = field(default_factory=dict)  # request metadata (HTTP headers / gRPC metadata)
    changed: bool = False
    client_address: str = ""
    deferred: bytes = b""  # a serialized KeyValueList still to be added to every record of `raw`
    deadline: float | None = None  # loop time by which the client's answer is due (None: no limit)

    @classmethod
    def from_bytes(cls, signal: Signal, raw: bytes, metadata: dict[str, str] | None = None) -> Payload:
        """Parse (and so validate) a serialized request; raises google.protobuf DecodeError."""
        message = signal.request_class.FromString(raw)
        return cls(signal, count_items(signal, message), raw=raw, message=message, metadata=metadata or {})

    @classmethod
    def from_message(cls, signal: Signal, message: Any, metadata: dict[str, str] | None = None) -> Payload:
        return cls(signal, count_items(signal, message), message=message, metadata=metadata or {}, changed=True)

    def view(self) -> Any:
        """The parsed message, parsed on first use. A processor that changes it calls `mark_changed()`."""
        if self.message is None:
            self._add_deferred()
            assert self.raw is not None, "a payload holds bytes, a message or both"
            self.message = self.signal.request_class.FromString(self.raw)
        return self.message

    def defer_attributes(self, attributes: bytes) -> None:
        """Add the serialized KeyValueList `attributes` to every record, but only when someone looks.

        A queue stores them next to the unchanged request (queue/record.py) and adds them when the
        record is read; anything that looks at the request before that gets them added at once."""
        self.deferred += attributes  # serialized KeyValueLists concatenate into one
        self.message = None  # a message parsed before would lack them

    def _add_deferred(self) -> None:
        if self.deferred:
            assert self.raw is not None, "attributes are deferred only next to bytes"
            self.raw, self.deferred = append_attributes(self.signal.shape, self.raw, self.deferred), b""

    def mark_changed(self, recount: bool = False) -> None:
        self.changed = True
        if recount:
            self.items = count_items(self.signal, self.message)

    def mutable_message(self) -> Any:
        """The parsed message, for a processor that is about to change it for sure."""
        message = self.view()
        self.changed = True
        return message

    def copy(self) -> Payload:
        """An independent payload for a second pipeline, so one pipeline's processors never leak into another's."""
        if not self.changed and self.raw is not None:
            return Payload(self.signal, self.items, raw=self.raw, metadata=self.metadata,
                           client_address=self.client_address, deferred=self.deferred, deadline=self.deadline)
        clone = self.signal.request_class()
        clone.CopyFrom(self.message)
        return Payload(self.signal, self.items, message=clone, metadata=self.metadata, changed=True,
                       client_address=self.client_address, deadline=self.deadline)

    def serialized(self) -> bytes:
        if self.changed or self.raw is None:
            self.raw = self.message.SerializeToString()
            self.changed = False
        self._add_deferred()
        return self.raw

    def stored_form(self) -> tuple[bytes, bytes]:
        """(request, deferred attributes) for a queue record, which adds the attributes when read."""
        if self.changed or self.raw is None:
            return self.serialized(), b""
        return self.raw, self.deferred


def merge_requests(signal: Signal, parts: list[bytes]) -> bytes:
    """Merge serialized export requests of one signal into one, keeping resource and scope grouping.

    Records of the same resource (and schema URL) end up in one ResourceSpans/Logs/Metrics, and
    within it records of the same scope in one ScopeSpans/Logs/Metrics. On the bytes (otel/merge.py);
    bytes that walk cannot read are merged as parsed messages (DecodeError when protobuf cannot read
    them either).
    """
    if len(parts) == 1:
        return parts[0]
    try:
        return merge(parts)
    except (WireError, IndexError):
        return merge_parsed(signal, parts)


def merge_parsed(signal: Signal, parts: list[bytes]) -> bytes:
    """merge_requests through the parsed messages."""
    shape = signal.shape
    merged = signal.request_class()
    by_resource: dict[tuple[bytes, str], tuple[Any, dict[tuple[bytes, str], Any]]] = {}
    for part in parts:
        for group in shape.groups_of(signal.request_class.FromString(part)):
            resource_key = (group.resource.SerializeToString(deterministic=True), group.schema_url)
            entry = by_resource.get(resource_key)
            if entry is None:
                entry = by_resource[resource_key] = (shape.add_group_like(merged, group), {})
            target, scopes = entry
            for scope in shape.scopes_of(group):
                scope_key = (scope.scope.SerializeToString(deterministic=True), scope.schema_url)
                target_scope = scopes.get(scope_key)
                if target_scope is None:
                    target_scope = scopes[scope_key] = shape.add_scope_like(target, scope)
                shape.items_of(target_scope).extend(shape.items_of(scope))
    return merged.SerializeToString()


def split_serialized(signal: Signal, body: bytes, max_items: int, max_bytes: int = 1 << 62) -> list[tuple[bytes, int]]:
    """(request, items) for requests of at most `max_items` items and about `max_bytes` bytes (otel.cut
    says how near) cut from the serialized `body`: on its bytes, which costs memory about its own
    size, where parsing a record of millions of tiny items and building the parts took hundreds of
    MiB outside any budget. Bytes that walk cannot read are parsed (DecodeError when protobuf cannot
    either), and then cut by items alone: as many as fit in `max_bytes` on average."""
    try:
        return cut(body, max_items, metrics=signal is Signal.METRICS, max_bytes=max_bytes)
    except (WireError, IndexError):
        request = signal.request_class.FromString(body)
        if len(body) > max_bytes:
            max_items = min(max_items, max(1, count_items(signal, request) * max_bytes // len(body)))
        return [(part.SerializeToString(), count_items(signal, part))
                for part in split_request(signal, request, max_items)]


def split_request(signal: Signal, request: Any, max_items: int) -> list[Any]:
    """Split a request into requests of at most `max_items` items, keeping resource and scope grouping.

    Items are what otelcol counts: spans, log records and metric *data points*, so one metric
    with many points is split into copies of the metric that carry a share of its points each."""
    if count_items(signal, request) <= max_items:
        return [request]
    splitter = _Splitter(signal, max(1, max_items))
    shape = signal.shape
    for group in shape.groups_of(request):
        for scope in shape.scopes_of(group):
            if signal is Signal.METRICS:
                for metric in scope.metrics:
                    splitter.add_metric(group, scope, metric)
            else:
                splitter.add_records(group, scope, shape.items_of(scope))
    splitter.flush()
    return splitter.out


class _Splitter:
    """Fills requests of at most `max_items` items one after the other."""

    def __init__(self, signal: Signal, max_items: int):
        self.shape = signal.shape
        self.request_class = signal.request_class
        self.max_items = max_items
        self.out: list[Any] = []
        self._start()

    def _start(self) -> None:
        self.current = self.request_class()
        self.count = 0
        self._source: Any = None  # the input scope that `_target` copies
        self._target: Any = None

    def flush(self) -> None:
        if self.count or len(self.shape.groups_of(self.current)):  # a metric without points counts 0
            self.out.append(self.current)
        self._start()

    def _room(self) -> int:
        if self.count >= self.max_items:
            self.flush()
        return self.max_items - self.count

    def _scope(self, group: Any, scope: Any) -> Any:
        """The scope in the current request that receives items of `scope`."""
        if self._source is not scope:
            self._target = self.shape.add_scope_like(self.shape.add_group_like(self.current, group), scope)
            self._source = scope
        return self._target

    def add_records(self, group: Any, scope: Any, items: Any) -> None:
        index = 0
        while index < len(items):
            chunk = items[index:index + self._room()]
            self.shape.items_of(self._scope(group, scope)).extend(chunk)
            self.count += len(chunk)
            index += len(chunk)

    def add_metric(self, group: Any, scope: Any, metric: Any) -> None:
        kind = metric.WhichOneof("data")
        points = getattr(metric, kind).data_points if kind is not None else ()
        room = self._room()
        if len(points) <= room:
            self._scope(group, scope).metrics.add().CopyFrom(metric)
            self.count += len(points)
            return
        shell = type(metric)()
        shell.CopyFrom(metric)
        del getattr(shell, kind).data_points[:]  # name, unit, temporality...: every part carries them
        index = 0
        while index < len(points):
            chunk = points[index:index + self._room()]
            part = self._scope(group, scope).metrics.add()
            part.CopyFrom(shell)
            getattr(part, kind).data_points.extend(chunk)
            self.count += len(chunk)
            index += len(chunk)
