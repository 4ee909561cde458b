"""Invalid UTF-8 in an OTLP protobuf's string fields, replaced so that the request can be kept.

otelcol's pdata never checks UTF-8, so otelcol accepts and forwards strings that are not UTF-8
(Latin-1 from a C++ SDK, raw bytes from its syslog or kafka receivers); the protobuf runtime
here refuses the whole request. A body it refuses for that is walked once, with the message
descriptors, and each invalid sequence of a string field becomes U+FFFD, as Go's
strings.ToValidUTF8 would have it and as any strict upstream needs it. Only that rare path pays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel.wire import LEN, WireError, field_at, length_delimited

if TYPE_CHECKING:  # protobuf comes with the first request (signals.py)
    from google.protobuf.descriptor import Descriptor

MAX_DEPTH = 100  # the protobuf runtime's own nesting limit: deeper is refused anyway


def repaired(descriptor: Descriptor, data: bytes) -> bytes | None:
    """`data`, a serialized `descriptor` message, with its strings made valid UTF-8; None when
    nothing needed it, or when it is no message the walk can read (the parse's error stands)."""
    try:
        return _repair(descriptor, data, 0, len(data), 0)
    except WireError:
        return None


def _repair(descriptor: Descriptor, data: bytes, start: int, end: int, depth: int) -> bytes | None:
    """data[start:end] repaired, None when it needs nothing. Nested messages are walked in place,
    by their offsets in `data`: a slice per level would copy a deeply nested body once per level."""
    if depth > MAX_DEPTH:
        raise WireError("nested too deeply")
    out: list[bytes] = []
    done = pos = start  # data[done:pos] is unchanged and not yet in `out`
    while pos < end:
        number, field_start, value_start, field_end = field_at(data, pos, end)
        field = descriptor.fields_by_number.get(number)
        value = None
        if field is not None and data[field_start] & 7 == LEN:
            if field.type == field.TYPE_STRING:
                value = _valid(data[value_start:field_end])
            elif field.type == field.TYPE_MESSAGE and field.message_type is not None:
                value = _repair(field.message_type, data, value_start, field_end, depth + 1)
        if value is not None:
            out += (data[done:field_start], length_delimited(number, value))
            done = field_end
        pos = field_end
    if not out:
        return None
    out.append(data[done:end])
    return b"".join(out)


def _valid(payload: bytes) -> bytes | None:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return payload.decode(errors="replace").encode()
    return None
