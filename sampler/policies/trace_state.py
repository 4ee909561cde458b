"""`trace_state`: sample a trace with a span whose W3C tracestate has `key` set to one of `values`.

The tracestate is parsed as OpenTelemetry Go's ParseTraceState does; a span whose tracestate
does not parse (a bad key or value, a duplicate key, more than 32 members) does not match.
"""

from __future__ import annotations

from sampler.policies.config import TraceStateConfig
from sampler.policies.view import spans_of
from sampler.trace import Decision, Trace

MAX_MEMBERS = 32
_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_LCALPHA_DIGIT = _LCALPHA | frozenset("0123456789")
_KEY_REST = _LCALPHA_DIGIT | frozenset("_-*/")
_VALUE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {",", "="}
_VALUE_LAST = _VALUE_CHARS - {" "}


def _key_part(part: str, first: frozenset[str], max_rest: int) -> bool:
    return (bool(part) and part[0] in first and len(part) - 1 <= max_rest
            and all(char in _KEY_REST for char in part[1:]))


def valid_key(key: str) -> bool:
    """simple-key, or tenant-id "@" system-id (W3C Trace Context)."""
    tenant, at, system = key.partition("@")
    if not at:
        return _key_part(key, _LCALPHA, 255)
    return _key_part(tenant, _LCALPHA_DIGIT, 240) and _key_part(system, _LCALPHA, 13)


def valid_value(value: str) -> bool:
    return (0 < len(value) <= 256 and all(char in _VALUE_CHARS for char in value[:-1])
            and value[-1] in _VALUE_LAST)


def parse_trace_state(text: str) -> dict[str, str] | None:
    """The members of a tracestate header, or None when it is invalid."""
    members: dict[str, str] = {}
    for member in text.split(","):
        if not member:
            continue
        key, sep, value = member.partition("=")
        key, value = key.lstrip(" \t"), value.rstrip(" \t")
        if not sep or not valid_key(key) or not valid_value(value) or key in members:
            return None
        members[key] = value
        if len(members) > MAX_MEMBERS:
            return None
    return members


class TraceState:
    def __init__(self, config: TraceStateConfig):
        self.key = config.key
        self.values = frozenset(config.matched_values())

    def evaluate(self, trace: Trace) -> Decision:
        key, values = self.key, self.values
        for span in spans_of(trace):
            text = span.trace_state
            if text:
                members = parse_trace_state(text)
                if members is not None and members.get(key, "") in values:
                    return Decision.SAMPLED
        return Decision.NOT_SAMPLED
