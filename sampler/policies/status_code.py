"""`status_code`: sample a trace with a span whose status code is one of `status_codes`.

A span's status code is the varint field 3 of its `Status`, so a set code (OK 1, ERROR 2) is in
the serialized span as the tag byte 0x18 followed by a varint whose first byte's low seven
bits are the code: 0x01/0x02, or 0x81/0x82 when a writer spent more bytes on it. A tag written
in more bytes than it needs starts with 0x98 and goes on with 0x80 or 0x00. When none of
those byte pairs is in the requests a trace came in (Trace.raw), no span can carry one of the
codes, and the trace is not sampled without parsing it (a search costs a third of parsing a
trace and reading its spans' codes; when another policy parsed it already, the spans are read).
UNSET (0) is the absence of the field, which bytes cannot rule out.
"""

from __future__ import annotations

from opentelemetry.proto.trace.v1.trace_pb2 import Status

from sampler.policies.config import StatusCodeConfig
from sampler.policies.view import spans_of
from sampler.trace import Decision, Trace

CODES = {"UNSET": Status.STATUS_CODE_UNSET, "OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
_TAG = 0x18  # field 3, varint
_LONG_TAG = b"\x98"  # its first byte when written in more bytes than it needs
_LONG_TAG_PAIRS = (b"\x98\x80", b"\x98\x00")


def needles(codes: frozenset[int]) -> tuple[bytes, ...] | None:
    """Byte pairs of which a serialized span with one of `codes` holds one (besides the long
    tag's); None: bytes cannot tell."""
    if Status.STATUS_CODE_UNSET in codes:
        return None
    return tuple(bytes((_TAG, first)) for code in sorted(codes) for first in (code, code | 0x80))


class StatusCode:
    def __init__(self, config: StatusCodeConfig):
        self.codes = frozenset(CODES[name] for name in config.status_codes)
        self.needles = needles(self.codes)

    def _may_hold(self, data: bytes) -> bool:
        # a two-byte search costs a few times a one-byte one: look for the rare long tag's first byte first
        return (any(needle in data for needle in self.needles or ())
                or (_LONG_TAG in data and any(pair in data for pair in _LONG_TAG_PAIRS)))

    def evaluate(self, trace: Trace) -> Decision:
        # parsed already (another policy walked the spans): reading a code per span is cheaper
        if self.needles is not None and trace.raw and not trace.parsed and not any(map(self._may_hold, trace.raw)):
            return Decision.NOT_SAMPLED
        codes = self.codes
        for span in spans_of(trace):
            if span.status.code in codes:
                return Decision.SAMPLED
        return Decision.NOT_SAMPLED
