"""`status_code`: sample a trace with a span whose status code is one of `status_codes`.

A span's status code is the varint field 3 of its `Status`, so a set code (OK 1, ERROR 2) is in
the serialized span as the tag byte 0x18 followed by a varint whose first byte's low seven
bits are the code: 0x01/0x02, or 0x81/0x82 when a writer spent more bytes on it. A tag written
in more bytes than it needs starts with 0x98 and goes on with 0x80 or 0x00. When none of
those byte pairs is in the requests a trace came in (Trace.raw), no span can carry one of the
codes, and the trace is not sampled without parsing it (a search costs a third of parsing a
trace and reading its spans' codes; when another policy parsed it already, the spans are read).
UNSET (0) is the absence of the field, which bytes cannot rule out.

A two-byte search walks the bytes in Python's generic loop, ten times slower than a one-byte
search (memchr). So the bytes are first translated with each code's long first byte folded
onto the code (0x82 to 0x02): one pair search per code then covers both forms. The long tag's
first byte is rare: its few places are looked at one by one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sampler.policies.base import HintSearcher, evaluate_hinted
from sampler.policies.config import StatusCodeConfig
from sampler.policies.view import MAX_PLACES, find_all, spans_of
from sampler.trace import Decision, Trace

CODES = {"UNSET": Status.STATUS_CODE_UNSET, "OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
_TAG = 0x18  # field 3, varint
_LONG_TAG = 0x98  # its first byte when written in more bytes than it needs


def needles(codes: frozenset[int]) -> tuple[bytes, ...] | None:
    """Byte pairs of which a serialized span with one of `codes` holds one (besides the long
    tag's) once translated with `folding(codes)`; None: bytes cannot tell."""
    if Status.STATUS_CODE_UNSET in codes:
        return None
    return tuple(bytes((_TAG, code)) for code in sorted(codes))


def folding(codes: frozenset[int]) -> bytes:
    """A bytes.translate table that maps each code's first byte in a longer varint onto the code."""
    table = bytearray(range(256))
    for code in codes:
        table[code | 0x80] = code
    return bytes(table)


def _long_tags(data: bytes, first_only: bool = False) -> list[int]:
    """Where the status code's tag starts written long (the first place only, with first_only)."""
    found = []
    find, last = data.find, len(data) - 1
    at = find(_LONG_TAG)
    while at >= 0:
        if at < last and not data[at + 1] & 0x7F:  # 0x80 or 0x00 after it
            found.append(at)
            if first_only:
                break
        at = find(_LONG_TAG, at + 1)
    return found


def _long_tag(data: bytes) -> bool:
    return bool(_long_tags(data, first_only=True))


class StatusCode(HintSearcher):
    def __init__(self, config: StatusCodeConfig):
        self.codes = frozenset(CODES[name] for name in config.status_codes)
        self.needles = needles(self.codes)
        self._folding = folding(self.codes)
        # a set code's tag and first byte, short or long, for searching a whole request (places)
        first_bytes = b"".join(re.escape(bytes((first,))) for code in sorted(self.codes)
                               for first in (code, code | 0x80))
        self._places = re.compile(re.escape(bytes((_TAG,))) + b"[" + first_bytes + b"]")

    def _may_hold(self, data: bytes) -> bool:
        folded = data.translate(self._folding)
        for needle in self.needles or ():
            if needle in folded:
                return True
        return _long_tag(data)

    def places(self, raw: bytes) -> list[int] | None:
        """Where in a request's bytes a span with one of the codes may hold it (Facts.finders)."""
        if self.needles is None:
            return None
        found: list[int] = []
        if not find_all(self._places, raw, found):
            return None
        found += _long_tags(raw)  # a memchr loop: twice as fast as a regex scan, the byte being rare
        return found if len(found) <= MAX_PLACES else None

    can_confirm = True

    def confirms(self, span: Span) -> bool:
        return span.status.code in self.codes

    def refuses(self, trace: Trace) -> bool:
        """Whether it is certain to answer NotSampled without reading the trace's spans."""
        return self.ruled_out(trace)

    def evaluate_many(self, traces: Sequence[Trace]) -> list[Decision]:
        return evaluate_hinted(self.evaluate, self.hint_bit, Decision.NOT_SAMPLED, traces)

    def evaluate(self, trace: Trace) -> Decision:
        hints = trace.hints
        if self.hint_bit and hints is not None:
            if not hints & self.hint_bit:
                return Decision.NOT_SAMPLED  # no span of it holds one of the codes' bytes
            if hints & self.sure_bit:
                return Decision.SAMPLED  # a span of it has one of the codes, read as it arrived
        # parsed already (another policy walked the spans): reading a code per span is cheaper
        if self.needles is not None and trace.raw and not trace.parsed and not any(map(self._may_hold, trace.raw)):
            return Decision.NOT_SAMPLED
        codes = self.codes
        for span in spans_of(trace):
            if span.status.code in codes:
                return Decision.SAMPLED
        return Decision.NOT_SAMPLED
