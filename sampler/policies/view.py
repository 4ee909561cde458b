"""What policies read of a trace, computed at most once per decision and shared.

Walking a trace's batches and scopes costs more than most policies' work per span, and an
attribute policy can skip a batch whose serialized bytes do not contain its key. So while
`decide` runs the policies on a trace, the first policy to ask for the trace's spans as one
list, or for its batches serialized, computes them and the others reuse them. A policy
evaluated on its own (or on another trace) computes them itself. The cache lives in a context
variable, so decisions on other threads or tasks never see it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel.shape import TRACES
from sampler.trace import Trace

# [the trace being decided, its spans, its serialized batches]; None until a policy asks
_DECIDING: ContextVar[list | None] = ContextVar("sampler_policies_deciding", default=None)


def _spans(trace: Trace) -> list[Span]:
    return TRACES.items_in(trace.batches)


def _serialized(trace: Trace) -> list[bytes]:
    return [batch.SerializeToString() for batch in trace.batches]


def _shared(trace: Trace, slot: int, compute) -> list:
    deciding = _DECIDING.get()
    if deciding is None or deciding[0] is not trace:
        return compute(trace)
    if deciding[slot] is None:
        deciding[slot] = compute(trace)
    return deciding[slot]


def spans_of(trace: Trace) -> list[Span]:
    """The trace's spans in arrival order (batch, then scope, then span)."""
    return _shared(trace, 1, _spans)


def serialized_batches(trace: Trace) -> list[bytes]:
    """Each batch of the trace as protobuf bytes, in the order of trace.batches."""
    return _shared(trace, 2, _serialized)


def start_deciding(trace: Trace) -> Token:
    """`decide` is about to run the policies on `trace`: let them share what they compute of it."""
    return _DECIDING.set([trace, None, None])


def stop_deciding(token: Token) -> None:
    _DECIDING.reset(token)
