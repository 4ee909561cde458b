"""The unit a tail-sampling policy judges: every span of one trace received so far.

Spans are kept as otelcol keeps them: in `ResourceSpans` batches (resource and scope intact),
each holding only spans of this trace, so a kept trace is forwarded exactly as it arrived.

A trace may also be built from the serialized requests its spans came in (`raw`) and a
`parse` function, without batches: the batches are then parsed the first time something asks
for them. Policies that can answer from the bytes or from trace-level facts (trace id, span
count, and `times`: the earliest start and latest end of its spans, read as they arrived)
never pay for parsing; most traces are dropped, so most are never parsed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from otel.shape import TRACES

# the resource groups of one serialized request in `Trace.raw` ([] when it does not parse)
Parse = Callable[[bytes], list[ResourceSpans]]


_NO_RAW: tuple[bytes, ...] = ()
_new = object.__new__


class Decision(enum.Enum):
    """A policy's verdict on a trace (otelcol's sampling.Decision)."""

    PENDING = "pending"
    SAMPLED = "sampled"
    NOT_SAMPLED = "not_sampled"
    DROPPED = "dropped"  # the drop policy: vetoes every other policy
    ERROR = "error"

    # members are equal only to themselves, so identity hashes them: in C, where Enum's own
    # hash is a Python call (decisions are counted and mapped by the thousand per round)
    __hash__ = object.__hash__


class SpansNotRead(LookupError):
    """A policy asked for the spans of a trace its caller decided without them."""


class Trace:
    """A trace's spans and what is known of it.

    `raw`: the serialized requests the spans came in, when the caller has them: a policy may
    rule a trace out by a byte search before it walks the spans. With `parse`, `batches` is
    left empty until first read, then parsed from `raw` (and kept)."""

    raw: Sequence[bytes]
    __slots__ = ("trace_id", "_batches", "span_count", "size_bytes", "raw", "_parse", "times", "hints", "view")

    def __init__(self, trace_id: bytes, batches: list[ResourceSpans] | None = None, span_count: int = 0,
                 size_bytes: int = 0, raw: list[bytes] | None = None, parse: Parse | None = None,
                 times: tuple[int, int] | None = None, hints: int | None = None):
        self.trace_id = trace_id
        self._batches = batches if batches is not None else ([] if parse is None else None)
        self.span_count = span_count
        self.size_bytes = size_bytes  # serialized size of the spans received, for bytes_limiting
        self.raw = raw if raw is not None else []
        self._parse = parse
        # (earliest start, latest end) of its spans, read when they arrived; None: not known,
        # or some span has no start time (then only the spans themselves tell its latency)
        self.times = times
        # bits of byte-searching policies (sampler.policies.byte_hints) that found in the requests
        # its spans came in a place where a match may be; a clear bit: that policy cannot match.
        # None: not known
        self.hints = hints
        self.view: list | None = None  # while policies decide it: what they share (sampler.policies.view)

    @classmethod
    def unread(cls, trace_id: bytes, span_count: int, size_bytes: int, times: tuple[int, int] | None,
               hints: int | None) -> Trace:
        """A trace its caller decides without its spans, as no policy reads them
        (sampler.policies.reads_bytes): asking for them raises SpansNotRead. Made slot by slot,
        a third of __init__'s cost: the stage makes one for most traces it decides. Its `raw` is
        one shared empty tuple, no list of its own: fewer objects for the garbage collector."""
        trace = _new(cls)  # a statement a slot, constants from module globals: a tuple assignment costs more
        trace.trace_id = trace_id
        trace._batches = None
        trace.span_count = span_count
        trace.size_bytes = size_bytes
        trace.raw = _NO_RAW
        trace._parse = None
        trace.times = times
        trace.hints = hints
        trace.view = None
        return trace

    @property
    def batches(self) -> list[ResourceSpans]:
        """The trace's `ResourceSpans`, in arrival order (parsed from `raw` on first read)."""
        batches = self._batches
        if batches is None:
            parse = self._parse
            if parse is None:
                raise SpansNotRead(f"the spans of trace {self.trace_id.hex()} were not read for its decision")
            batches = self._batches = [batch for body in self.raw for batch in parse(body)]
        return batches

    @batches.setter
    def batches(self, batches: list[ResourceSpans]) -> None:
        self._batches = batches
        self.times = self.hints = None  # spans set here need not be those the facts were read from

    @property
    def parsed(self) -> bool:
        """Whether the batches are at hand (given, or parsed already)."""
        return self._batches is not None

    def spans(self) -> Iterator[tuple[Resource, InstrumentationScope, Span]]:
        """(resource, scope, span) for every span, in arrival order."""
        return TRACES.walk_groups(self.batches)

    def __repr__(self) -> str:
        return f"Trace({self.trace_id.hex()}, spans={self.span_count}, parsed={self.parsed})"
