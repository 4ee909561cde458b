"""Build traces for policy tests from plain values, and policies from YAML snippets.

    trace(batch(resource={"service.name": "api"}, spans=[span(attrs={"http.status_code": 500})]))

Attribute values keep their Python type (str, int, float, bool); None is an attribute whose
value is empty. Times are milliseconds from an arbitrary epoch.
"""

from __future__ import annotations

from typing import Any

import yaml
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from edgeagent.processors.actions import to_any_value
from sampler.policies import build_policy
from sampler.policies.config import PolicyConfig
from sampler.trace import Decision, Trace

EPOCH_NS = 1_700_000_000_000_000_000
STATUS = {"UNSET": Status.STATUS_CODE_UNSET, "OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
SHORT = {"S": Decision.SAMPLED, "N": Decision.NOT_SAMPLED, "D": Decision.DROPPED, "E": Decision.ERROR}


def _fill(attributes: Any, values: dict[str, Any] | None) -> None:
    for key, value in (values or {}).items():
        attributes.add(key=key).value.CopyFrom(AnyValue() if value is None else to_any_value(value))


def span(attrs: dict[str, Any] | None = None, start_ms: float = 0, end_ms: float = 0, status: str = "UNSET",
         trace_state: str = "", flags: int = 0, name: str = "op") -> Span:
    out = Span(name=name, trace_state=trace_state, flags=flags,
               start_time_unix_nano=EPOCH_NS + int(start_ms * 1_000_000),
               end_time_unix_nano=EPOCH_NS + int(end_ms * 1_000_000))
    out.status.code = STATUS[status]
    _fill(out.attributes, attrs)
    return out


def batch(spans: list[Span], resource: dict[str, Any] | None = None) -> ResourceSpans:
    out = ResourceSpans()
    _fill(out.resource.attributes, resource)
    out.scope_spans.add().spans.extend(spans)
    return out


def trace(*batches: ResourceSpans, trace_id: bytes = bytes(range(16))) -> Trace:
    count = sum(len(scope.spans) for b in batches for scope in b.scope_spans)
    size = sum(b.ByteSize() for b in batches)
    return Trace(trace_id=trace_id, batches=list(batches), span_count=count, size_bytes=size)


def spans_trace(*spans: Span, resource: dict[str, Any] | None = None) -> Trace:
    """A trace of one batch."""
    return trace(batch(list(spans), resource))


def policy_config(snippet: str) -> PolicyConfig:
    """A policy from its YAML, as it stands in `policies:`."""
    return PolicyConfig.model_validate(yaml.safe_load(snippet))


def decisions(snippet: str, traces: dict[str, Trace], clock: Any = None) -> dict[str, str]:
    """Each trace's decision by a fresh policy built from the snippet, as SHORT's abbreviations."""
    names = {decision: short for short, decision in SHORT.items()}
    out = {}
    for name, item in traces.items():
        policy = build_policy(policy_config(snippet), clock or (lambda: 0.0))
        out[name] = names[policy.evaluate(item)]
    return out


class FakeClock:
    """Seconds that move only when a test advances them."""

    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
