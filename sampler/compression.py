"""Span compression: runs of similar, short exit spans in a kept trace become one composite span.

Elastic APM's span compression (the APM agent specification's "Compressing spans"), done on the
OTLP spans of a trace the sampler keeps, before the trace is forwarded. N+1 queries and chatty
cache or HTTP clients then cost one span instead of hundreds, with count and net duration kept.

Terms, in OTLP
--------------
* **exit span**: kind CLIENT or PRODUCER; or kind INTERNAL or UNSPECIFIED with a system
  (`db.system`, `messaging.system`, `rpc.system`) or a destination (below). SERVER and CONSUMER
  spans are entries, never exits: a SERVER span's `server.address` is its own address.
* **destination** (Elastic's `destination.service.resource`), the first that is set of:
  `peer.service`; `db.system` with `/<db.namespace or db.name>` when set; `messaging.system` with
  `/<messaging.destination.name or messaging.destination>` when set; `host[:port]` from
  `server.address` or `net.peer.name` and `server.port` or `net.peer.port`; `host[:port]` of
  `url.full` or `http.url`.
* **kind** (Elastic's type, subtype and destination): the span kind, the system (`db.system`,
  `messaging.system`, `rpc.system`, or "http" for a span with an HTTP method or URL) and the
  destination.
* **operation**: the span name; but when the span's `db.statement` or `db.query.text` matches one
  of `sql_patterns` (a search with Go's regular expressions, as otelcol's, run by RE2 in time linear
  in the statement; the first matching pattern wins), that pattern,
  so `SELECT * FROM t WHERE id=1` and `... id=2` are one operation.
* **eligible** (Elastic's exit, not propagated, outcome not failure, plus this module's knobs): an
  exit span whose status is not ERROR; that no span of the trace names as its parent (its context
  did not propagate, so removing it orphans nothing); that ends no earlier than it starts and
  lasts at most `max_span_duration_secs`; whose name is in `compress_operations` (when that is
  not empty) and not in `exclude_operations`; and that is not a composite already (it carries no
  `span.composite.count`), so compressing a trace twice changes nothing the second time.

Consecutive
-----------
Siblings are the spans of the trace with the same parent span id, whichever batch they arrived
in. They are ordered by start time, then end time, then arrival. Two siblings are consecutive
when they are neighbours in that order: any sibling between them, eligible or not, separates them.

Runs
----
Walking the siblings in that order, an eligible span opens a run, as Elastic's agents buffer one
span in its parent. The next span joins when it is eligible, has the same resource, instrumentation
scope and kind as the run's first span, starts at most `compression_window_secs` after the first
starts, and fits the run's strategy. The second span fixes the strategy: `exact_match` when its
operation is the first's; else `same_kind` when the kind has a destination (the composite is named
after it); else it does not join. Later spans then need the first's operation (exact_match) or
may have any (same_kind): the strategy never changes within a run, so `A A B B B` of one
destination is two exact_match runs, not one same_kind run. A span that does not join closes the
run and, when eligible, opens the next one. A closed run of at least `min_compression_count`
spans becomes a composite; a shorter one is left as it is.

Composite
---------
The run's first span stays where it is, with its ids, start, attributes, events and links. It
ends at the latest end in the run; under same_kind it is renamed `Calls to <destination>`. It
gains Elastic's composite fields as attributes: `span.composite.count` (int, the spans it stands
for), `span.composite.sum` (double, the sum of their durations in milliseconds) and
`span.composite.compression_strategy` (`exact_match` or `same_kind`). The run's other spans are
removed, and so are ScopeSpans and ResourceSpans they leave empty. `trace.span_count` drops by
the spans removed; `trace.size_bytes` keeps counting what was received.

Unlike Elastic's agents, one duration limit serves both strategies, and a run needs
`min_compression_count` spans and a window; everything is decided on the whole trace, so the
work is one pass over the spans, a sort of each parent's children and one walk of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated
from urllib.parse import urlsplit

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import AfterValidator, Field, model_validator

from otel.goregex import GoRegex, compile_go_regex
from otel.shape import TRACES
from otel.values import scalar_text
from sampler.settings import Settings
from sampler.trace import Trace

EXACT_MATCH = "exact_match"
SAME_KIND = "same_kind"
COMPOSITE_COUNT = "span.composite.count"
COMPOSITE_SUM = "span.composite.sum"
COMPOSITE_STRATEGY = "span.composite.compression_strategy"

_NANOS = 1_000_000_000
_EXIT_KINDS = frozenset({Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER})
_ENTRY_KINDS = frozenset({Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CONSUMER})
_SYSTEMS = ("db.system", "messaging.system", "rpc.system")
_HTTP_MARKERS = ("http.request.method", "http.method", "url.full", "http.url")
_STATEMENTS = ("db.statement", "db.query.text")
_ATTRIBUTES = frozenset({
    COMPOSITE_COUNT, "peer.service", *_SYSTEMS, *_HTTP_MARKERS, *_STATEMENTS, "db.namespace", "db.name",
    "messaging.destination.name", "messaging.destination", "server.address", "net.peer.name", "server.port",
    "net.peer.port",
})


def _valid_pattern(pattern: str) -> str:
    compile_go_regex(pattern)  # a ValueError that says why Go refuses it, or how to get RE2
    return pattern


class SpanCompressionConfig(Settings):
    """Span compression settings; the seed deployment guide's `spanCompression` block, renamed:

    | seed (camelCase)        | here (snake_case)         | default | meaning                                 |
    |-------------------------|---------------------------|---------|-----------------------------------------|
    | `enabled`               | `enabled`                 | false   | compress kept traces at all             |
    | `minCompressionCount`   | `min_compression_count`   | 3       | fewest spans a composite stands for     |
    | `compressionWindowSecs` | `compression_window_secs` | 60      | latest start after a run's first start  |
    | `maxSpanDurationSecs`   | `max_span_duration_secs`  | 60      | longest span that is compressed         |
    | `compressOperations`    | `compress_operations`     | []      | when not empty, only these span names   |
    | `excludeOperations`     | `exclude_operations`      | []      | never these span names                  |
    | `sqlPatterns`           | `sql_patterns`            | []      | statements one matches: one operation   |

    Off by default: a composite keeps only its first span's statement and attributes.
    """

    enabled: bool = False
    min_compression_count: int = Field(3, ge=2)  # a composite stands for at least two spans
    compression_window_secs: float = Field(60.0, gt=0)
    max_span_duration_secs: float = Field(60.0, gt=0)
    compress_operations: list[str] = Field(default_factory=list)
    exclude_operations: list[str] = Field(default_factory=list)
    sql_patterns: list[Annotated[str, AfterValidator(_valid_pattern)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SpanCompressionConfig:
        both = sorted(set(self.compress_operations) & set(self.exclude_operations))
        if both:
            raise ValueError(f"{', '.join(map(repr, both))} cannot be in both compress_operations and "
                             f"exclude_operations")
        return self

    @cached_property
    def compiled_sql_patterns(self) -> tuple[GoRegex, ...]:
        return tuple(compile_go_regex(pattern) for pattern in self.sql_patterns)

    @cached_property
    def compressed_names(self) -> frozenset[str]:
        return frozenset(self.compress_operations)

    @cached_property
    def excluded_names(self) -> frozenset[str]:
        return frozenset(self.exclude_operations)


@dataclass(slots=True)
class _Sibling:
    span: Span
    place: tuple[int, int]  # (batch index, scope index) in the trace
    index: int  # in its ScopeSpans
    origin: int  # which resource and scope it came from
    start: int
    end: int


@dataclass(slots=True)
class _Candidate:
    sibling: _Sibling
    kind: tuple[int, str, str]  # span kind, system, destination
    operation: object
    duration: int


@dataclass
class _Run:
    first: _Candidate
    members: list[_Candidate] = field(default_factory=list)
    strategy: str = ""

    def offer(self, candidate: _Candidate, window: int) -> bool:
        first = self.first
        if (candidate.sibling.origin != first.sibling.origin or candidate.kind != first.kind
                or candidate.sibling.start - first.sibling.start > window):
            return False
        same_operation = candidate.operation == first.operation
        if not self.strategy:
            if same_operation:
                self.strategy = EXACT_MATCH
            elif first.kind[2]:
                self.strategy = SAME_KIND
            else:
                return False
        elif self.strategy == EXACT_MATCH and not same_operation:
            return False
        self.members.append(candidate)
        return True


def compress_trace(trace: Trace, config: SpanCompressionConfig) -> int:
    """Compress the trace's batches in place as the module describes; return the spans removed."""
    if not config.enabled:
        return 0
    parents: set[bytes] = set()
    families: dict[bytes, list[_Sibling]] = {}
    origins: dict[tuple[bytes, str, bytes, str], int] = {}
    for b, batch in enumerate(trace.batches):
        resource = batch.resource.SerializeToString(deterministic=True)
        for s, scope_spans in enumerate(TRACES.scopes_of(batch)):
            key = (resource, batch.schema_url, scope_spans.scope.SerializeToString(deterministic=True),
                   scope_spans.schema_url)
            origin = origins.setdefault(key, len(origins))
            for i, span in enumerate(TRACES.items_of(scope_spans)):
                parents.add(span.parent_span_id)
                families.setdefault(span.parent_span_id, []).append(
                    _Sibling(span, (b, s), i, origin, span.start_time_unix_nano, span.end_time_unix_nano))
    window = round(config.compression_window_secs * _NANOS)
    removed: dict[tuple[int, int], set[int]] = {}
    for family in families.values():
        if len(family) < config.min_compression_count:
            continue
        family.sort(key=lambda sibling: (sibling.start, sibling.end))
        run: _Run | None = None
        for sibling in family:
            candidate = _candidate(sibling, config, parents)
            if run is not None and candidate is not None and run.offer(candidate, window):
                continue
            if run is not None:
                _close(run, config, removed)
            run = _Run(candidate, [candidate]) if candidate is not None else None
        if run is not None:
            _close(run, config, removed)
    return _remove(trace, removed)


def _candidate(sibling: _Sibling, config: SpanCompressionConfig, parents: set[bytes]) -> _Candidate | None:
    """The sibling's kind and operation when it is eligible; None when it is not."""
    span = sibling.span
    duration = sibling.end - sibling.start
    if (span.status.code == Status.STATUS_CODE_ERROR or span.kind in _ENTRY_KINDS or span.span_id in parents
            or span.name in config.excluded_names
            or (config.compressed_names and span.name not in config.compressed_names)
            or duration < 0 or duration > config.max_span_duration_secs * _NANOS):
        return None
    attributes: dict[str, str] = {}
    for kv in span.attributes:
        if kv.key in _ATTRIBUTES:
            text = scalar_text(kv.value)
            if text:
                attributes[kv.key] = text
    if COMPOSITE_COUNT in attributes:
        return None
    system = next((attributes[key] for key in _SYSTEMS if key in attributes), "")
    destination = _destination(attributes)
    if span.kind not in _EXIT_KINDS and not (system or destination):
        return None
    if not system and any(key in attributes for key in _HTTP_MARKERS):
        system = "http"
    return _Candidate(sibling, (span.kind, system, destination), _operation(span.name, attributes, config), duration)


def _destination(attributes: dict[str, str]) -> str:
    if "peer.service" in attributes:
        return attributes["peer.service"]
    for system, names in (("db.system", ("db.namespace", "db.name")),
                          ("messaging.system", ("messaging.destination.name", "messaging.destination"))):
        if system in attributes:
            name = next((attributes[key] for key in names if key in attributes), "")
            return f"{attributes[system]}/{name}" if name else attributes[system]
    host = attributes.get("server.address") or attributes.get("net.peer.name")
    if host:
        port = attributes.get("server.port") or attributes.get("net.peer.port")
        return f"{host}:{port}" if port else host
    url = attributes.get("url.full") or attributes.get("http.url")
    if url:
        try:
            return urlsplit(url).netloc.rpartition("@")[2]
        except ValueError:
            return ""
    return ""


def _operation(name: str, attributes: dict[str, str], config: SpanCompressionConfig) -> object:
    statement = next((attributes[key] for key in _STATEMENTS if key in attributes), None)
    if statement is not None:
        for number, pattern in enumerate(config.compiled_sql_patterns):
            if pattern.search(statement):
                return number
    return name


def _close(run: _Run, config: SpanCompressionConfig, removed: dict[tuple[int, int], set[int]]) -> None:
    if len(run.members) < config.min_compression_count:
        return
    composite = run.first.sibling.span
    composite.end_time_unix_nano = max(member.sibling.end for member in run.members)
    if run.strategy == SAME_KIND:
        composite.name = f"Calls to {run.first.kind[2]}"
    _set(composite, COMPOSITE_COUNT, AnyValue(int_value=len(run.members)))
    _set(composite, COMPOSITE_SUM, AnyValue(double_value=sum(member.duration for member in run.members) / 1e6))
    _set(composite, COMPOSITE_STRATEGY, AnyValue(string_value=run.strategy))
    for member in run.members[1:]:
        removed.setdefault(member.sibling.place, set()).add(member.sibling.index)


def _set(span: Span, key: str, value: AnyValue) -> None:
    for kv in span.attributes:
        if kv.key == key:
            kv.value.CopyFrom(value)
            return
    span.attributes.add(key=key).value.CopyFrom(value)


def _remove(trace: Trace, removed: dict[tuple[int, int], set[int]]) -> int:
    """Drop the compressed spans: each touched ScopeSpans is rebuilt once, so the cost stays linear."""
    count = 0
    emptied: list[tuple[int, int]] = []
    for (b, s), indexes in removed.items():
        spans = TRACES.items_of(TRACES.scopes_of(trace.batches[b])[s])
        kept = [span for i, span in enumerate(spans) if i not in indexes]
        del spans[:]
        spans.extend(kept)
        count += len(indexes)
        if not kept:
            emptied.append((b, s))
    for b, s in sorted(emptied, reverse=True):  # later scopes first, so earlier indexes stay right
        del TRACES.scopes_of(trace.batches[b])[s]
    if emptied:
        touched = {b for b, _ in emptied}
        trace.batches = [batch for b, batch in enumerate(trace.batches) if b not in touched or TRACES.scopes_of(batch)]
    trace.span_count -= count
    return count
