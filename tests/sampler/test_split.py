"""Cutting a request by trace at the byte level gives what the message path gives."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from otel.wire import WireError, fields, length_delimited, read_varint, varint
from sampler.split import PAST, Facts, split_body, split_by_trace, split_serialized


def _request(rng: random.Random, groups: int = 2, scopes: int = 2,
             interleave: bool = False) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    trace_ids = [rng.randbytes(16) for _ in range(5)]
    for g in range(groups):
        group = request.resource_spans.add(schema_url=f"group-{g}")
        group.resource.attributes.add(key="service.name").value.string_value = f"service-{g}"
        for s in range(scopes):
            scope = group.scope_spans.add(scope={"name": f"scope-{s}"}, schema_url=f"scope-{s}")
            for index in range(rng.randint(1, 12)):
                trace_id = rng.choice(trace_ids) if interleave else trace_ids[(index // 4) % 5]
                # a long name now and then: span lengths of one, two and three varint bytes
                name = "x" * rng.choice([3, 200, 20_000])
                scope.spans.add(trace_id=trace_id, span_id=rng.randbytes(8), name=name,
                                parent_span_id=b"" if rng.random() < 0.2 else rng.randbytes(8))
    return request


def _as_message_path(request: ExportTraceServiceRequest) -> list[tuple[bytes, ExportTraceServiceRequest, int, bool]]:
    return [(trace_id, part, count, root) for trace_id, part, count, root in split_by_trace(request)]


@pytest.mark.parametrize("interleave", [False, True])
def test_byte_split_holds_the_same_spans_resources_and_scopes_as_the_message_split(interleave):
    rng = random.Random(9)
    for _ in range(30):
        request = _request(rng, rng.randint(1, 3), rng.randint(1, 3), interleave)
        raw = request.SerializeToString()
        expected = _as_message_path(request)
        got = split_serialized(raw, request)
        assert [(t, c, r) for t, _, c, r in got] == [(t, c, r) for t, _, c, r in expected]
        for (_, body, _, _), (_, part, _, _) in zip(got, expected, strict=True):
            assert ExportTraceServiceRequest.FromString(body) == part


def test_a_request_of_one_trace_is_its_bytes_unchanged():
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for _ in range(3):
        spans.add(trace_id=b"t" * 16, span_id=b"s" * 8)
    raw = request.SerializeToString()
    assert split_serialized(raw, request) == [(b"t" * 16, raw, 3, True)]


def test_fields_out_of_the_usual_order_and_unknown_fields_still_split_right():
    """Schema URL before the resource, a field number OTLP does not define: kept in the part as
    protobuf keeps unknown fields; parts still parse to the message path's spans."""
    request = _request(random.Random(2), 1, 1)
    group = request.resource_spans[0]
    scope = group.scope_spans[0]
    spans = b"".join(length_delimited(2, span.SerializeToString()) for span in scope.spans)
    scope_bytes = length_delimited(3, b"late-url") + length_delimited(1, scope.scope.SerializeToString()) + spans
    unknown = varint(99 << 3) + varint(7)
    group_bytes = (length_delimited(3, b"group-url") + unknown + length_delimited(2, scope_bytes)
                   + length_delimited(1, group.resource.SerializeToString()))
    raw = length_delimited(1, group_bytes)
    parsed = ExportTraceServiceRequest.FromString(raw)
    for (trace_id, body, count, _), (expected_id, part, expected_count, _) in zip(
            split_serialized(raw, parsed), _as_message_path(parsed), strict=True):
        assert (trace_id, count) == (expected_id, expected_count)
        mine = ExportTraceServiceRequest.FromString(body)
        assert list(mine.resource_spans[0].scope_spans[0].spans) == list(part.resource_spans[0].scope_spans[0].spans)
        assert mine.resource_spans[0].resource == part.resource_spans[0].resource
        assert mine.resource_spans[0].scope_spans[0].schema_url == "late-url"


def test_bytes_that_disagree_with_the_message_fall_back_to_the_message_path():
    request = _request(random.Random(4), 2, 2)
    other = _request(random.Random(5), 1, 1).SerializeToString()  # not the bytes of `request`
    got = split_serialized(other, request)
    expected = _as_message_path(request)
    assert [(t, c) for t, _, c, _ in got] == [(t, c) for t, _, c, _ in expected]


def test_wire_walk_refuses_truncated_bytes_and_groups():
    raw = length_delimited(1, b"abc")
    with pytest.raises(WireError):
        fields(raw[:-1], 0, len(raw) - 1)
    with pytest.raises(WireError):
        fields(varint(1 << 3 | 3), 0, 1)  # a start-group key
    assert read_varint(varint(300) + b"\x01", 0) == (300, 2)
    assert all(read_varint(varint(value), 0)[0] == value for value in (0, 127, 128, 16383, 16384, 2**63))


def _times_of_spans(request: ExportTraceServiceRequest) -> dict[bytes, tuple[int, int] | None]:
    """Each trace's earliest start and latest end read span by span; None once a start is unset,
    or a run of its spans in a scope (spans of one trace one after the other) ends from 2**63
    on or starts there, every span of it."""
    out: dict[bytes, tuple[int, int] | None] = {}
    for group in request.resource_spans:
        for scope in group.scope_spans:
            for trace_id, run in groupby(scope.spans, key=lambda span: span.trace_id):
                spans = list(run)
                starts = [span.start_time_unix_nano for span in spans]
                ends = [span.end_time_unix_nano for span in spans]
                known = out.get(trace_id, (min(starts), max(ends)))
                late = max(ends) >= PAST or min(starts) >= PAST
                out[trace_id] = (None if known is None or not min(starts) or late
                                 else (min(known[0], min(starts)), max(known[1], max(ends))))
    return out


def _time(rng: random.Random) -> int:
    """Nanoseconds, now and then from 2**63 on (past 2262)."""
    return rng.randrange(PAST, 1 << 64) if rng.random() < 0.03 else rng.randrange(1, PAST)


@pytest.mark.parametrize("interleave", [False, True])
def test_times_are_each_traces_earliest_start_and_latest_end_or_none_with_an_unset_start(interleave):
    rng = random.Random(11)
    unknown = 0
    for _ in range(60):
        request = _request(rng, rng.randint(1, 3), rng.randint(1, 3), interleave)
        for group in request.resource_spans:
            for scope in group.scope_spans:
                for span in scope.spans:
                    span.start_time_unix_nano = 0 if rng.random() < 0.03 else _time(rng)
                    span.end_time_unix_nano = _time(rng) - 1
        facts = Facts(read_times=True)
        split_serialized(request.SerializeToString(), request, facts=facts)
        times = facts.times
        assert times == _times_of_spans(request)
        unknown += sum(value is None for value in times.values())
    assert unknown  # the unset-start case was exercised


def test_times_read_from_a_walk_that_fell_back_are_dropped():
    request = _request(random.Random(4))
    raw = request.SerializeToString() + length_delimited(1, b"\x0a\x00")  # a group the message does not hold
    facts = Facts(read_times=True, finders=[(1, lambda data: [])])
    split_serialized(raw, request, facts=facts)
    assert facts.times == {} and facts.hints == {}


def test_hints_clear_a_policys_bit_only_for_traces_none_of_whose_spans_can_match():
    """Facts.hints from whole-request searches agree with the policies themselves: a trace
    whose bit is clear has no span the policy samples, one whose second bit is set has one, and
    one in a resource matches all. The policies' bytes also show in other fields, where they
    match nothing."""
    import yaml

    from sampler.policies import build_policies, byte_hints
    from sampler.policies.config import PolicyConfig
    from sampler.trace import Decision, Trace

    configs = [PolicyConfig.model_validate(yaml.safe_load(text)) for text in (
        "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}",
        "{name: vip, type: string_attribute, string_attribute: {key: customer, values: [vip]}}")]
    rng = random.Random(12)
    ruled_out = matched = 0
    for round_ in range(40):
        policies = build_policies(configs, lambda: 0.0)
        finders, confirms = byte_hints(policies)
        request = _request(rng, rng.randint(1, 2), rng.randint(1, 2), interleave=bool(round_ % 2))
        for g, group in enumerate(request.resource_spans):
            if round_ % 5 == 0 and g == 0:
                group.resource.attributes.add(key="customer").value.string_value = "vip"  # every trace may match
            for scope in group.scope_spans:
                for span in scope.spans:
                    if rng.random() < 0.05:
                        span.status.code = 2
                    if rng.random() < 0.05:
                        span.attributes.add(key="customer").value.string_value = "vip"
                    if rng.random() < 0.1:  # the bytes of both, where neither policy looks
                        span.attributes.add(key="note").value.string_value = "vip \x18\x02"
        raw = request.SerializeToString()
        facts = Facts(finders=finders, confirms=confirms)
        parts = split_serialized(raw, request, facts=facts)
        for trace_id, part, _, _ in parts:
            trace = Trace(trace_id, batches=list(ExportTraceServiceRequest.FromString(part).resource_spans))
            for named in policies:
                bit, sure_bit = named.policy.hint_bit, named.policy.sure_bit
                assert sure_bit
                decision = named.policy.evaluate(trace)  # from the spans: this trace's hints are unknown
                if not facts.hints[trace_id] & bit:
                    ruled_out += 1
                    assert decision is Decision.NOT_SAMPLED
                elif facts.hints[trace_id] & sure_bit:
                    matched += 1
                    assert decision is Decision.SAMPLED
                elif round_ % 5:  # no match in a resource: only a span that may not parse alone is left unsure
                    pytest.fail("a place in a span that parses was neither confirmed nor cleared")
    assert ruled_out and matched


def _scope_fields(rng: random.Random) -> list[bytes]:
    """A scope's fields in a random order: spans of one-, two- and three-byte lengths, and the
    scope, schema URL and an unknown varint field before, between and after them."""
    out = []
    for _ in range(rng.randint(0, 8)):
        kind = rng.random()
        if kind < 0.7:
            out.append(length_delimited(2, rng.randbytes(rng.choice([0, 5, 127, 128, 300, 16_383, 16_384]))))
        elif kind < 0.8:
            out.append(length_delimited(1, rng.randbytes(rng.randint(0, 20))))
        elif kind < 0.9:
            out.append(length_delimited(3, b"url"))
        else:
            out.append(varint(9 << 3) + varint(rng.randrange(1 << 20)))
    return out


def _walk_by_fields(raw: bytes, start: int, end: int) -> tuple[list[bytes], list[tuple[int, int]]]:
    """What _spans_and_header must give, read with the generic field walk."""
    header, ranges = [], []
    for number, pos, _, field_end in fields(raw, start, end):
        if number == 2:
            ranges.append((pos, field_end))
        else:
            header.append(raw[pos:field_end])
    return header, ranges


def test_span_walk_gives_the_generic_walks_spans_and_header_or_refuses_what_it_refuses():
    """Spans anywhere among the scope's other fields, and scopes cut short anywhere (a field
    past the scope's end reads the bytes after it, as a scope inside a request does)."""
    from sampler.split import _spans_and_header

    rng = random.Random(21)
    refused = 0
    for round_ in range(400):
        scope = b"".join(_scope_fields(rng))
        cut = len(scope) if round_ % 2 else rng.randint(0, len(scope))
        raw = b"\x0a\x00" + scope + rng.choice([b"", rng.randbytes(4), b"\x12\xff\xff"])
        start, end = 2, 2 + cut
        try:
            expected = _walk_by_fields(raw, start, end)
        except WireError:
            refused += 1
            with pytest.raises(WireError):
                _spans_and_header(raw, start, end)
            continue
        header, starts, ends, _ = _spans_and_header(raw, start, end)
        assert (header, list(zip(starts, ends, strict=True))) == expected
    assert refused > 50


@pytest.mark.parametrize("after", [b"", length_delimited(3, b"url"), varint(9 << 3) + varint(1)])
def test_a_field_between_or_after_spans_stays_out_of_every_part(after):
    """A scope field after a trace's spans (and between two traces' spans) is scope header,
    not the end of the span before it."""
    request = ExportTraceServiceRequest()
    spans = [request.resource_spans.add().scope_spans.add().spans.add(trace_id=bytes([t]) * 16, span_id=b"s" * 8)
             for t in (1, 1, 2)]
    scope = (length_delimited(2, spans[0].SerializeToString()) + length_delimited(2, spans[1].SerializeToString())
             + after + length_delimited(2, spans[2].SerializeToString()) + after)
    raw = length_delimited(1, length_delimited(2, scope))
    parsed = ExportTraceServiceRequest.FromString(raw)
    got = split_serialized(raw, parsed)
    assert [(trace_id, count) for trace_id, _, count, _ in got] == [(b"\x01" * 16, 2), (b"\x02" * 16, 1)]
    for (_, body, _, _), (_, part, _, _) in zip(got, _as_message_path(parsed), strict=True):
        mine = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0]
        assert list(mine.spans) == list(part.resource_spans[0].scope_spans[0].spans)
        assert mine.schema_url == ("url" if after.startswith(b"\x1a") else "")
        _, _, group_start, group_end = fields(body, 0, len(body))[0]
        _, _, scope_start, scope_end = fields(body, group_start, group_end)[0]
        scope_fields = [number for number, *_ in fields(body, scope_start, scope_end)]
        assert scope_fields.count(2) == len(mine.spans) and len(scope_fields) == len(mine.spans) + 2 * bool(after)


def _spans_of(request: ExportTraceServiceRequest) -> list[bytes]:
    return sorted(span.SerializeToString() for group in request.resource_spans
                  for scope in group.scope_spans for span in scope.spans)


@pytest.mark.parametrize("interleave", [False, True])
def test_the_body_is_every_part_one_after_the_other_at_the_lengths_given(interleave):
    """One trace (the request itself), traces in one run each, traces in several runs over
    groups and scopes: each length cuts out exactly its trace's part, and the body, parsed,
    holds every span of the request once."""
    rng = random.Random(30)
    for round_ in range(40):
        request = _request(rng, rng.randint(1, 3), rng.randint(1, 3), interleave)
        if round_ % 8 == 0:
            for group in request.resource_spans:
                for scope in group.scope_spans:
                    for span in scope.spans:
                        span.trace_id = b"o" * 16
        raw = request.SerializeToString()
        body, parts = split_body(raw, request)
        expected = _as_message_path(request)
        assert [(t, c, r) for t, _, c, r in parts] == [(t, c, r) for t, _, c, r in expected]
        assert sum(length for _, length, _, _ in parts) == len(body)
        assert _spans_of(ExportTraceServiceRequest.FromString(body)) == _spans_of(request)
        at = 0
        for (_, length, _, _), (_, part, _, _) in zip(parts, expected, strict=True):
            assert _spans_of(ExportTraceServiceRequest.FromString(body[at:at + length])) == _spans_of(part)
            at += length
        if len(parts) == 1:
            assert body is raw


def test_the_body_of_the_message_path_is_its_parts_one_after_the_other():
    request = _request(random.Random(4), 2, 2)
    raw = request.SerializeToString() + length_delimited(1, b"\x0a\x00")  # a group the message does not hold
    body, parts = split_body(raw, request)
    expected = [part.SerializeToString() for _, part, _, _ in _as_message_path(request)]
    assert body == b"".join(expected) and [length for _, length, _, _ in parts] == list(map(len, expected))


def _rich_request(rng: random.Random) -> ExportTraceServiceRequest:
    """Traces interleaved or in runs over several resources and scopes, spans without a start
    time, and bytes a finder looks for in spans, resources and scopes."""
    request = ExportTraceServiceRequest()
    trace_ids = [rng.randbytes(16) for _ in range(rng.randint(1, 6))]
    interleave = rng.random() < 0.5
    for g in range(rng.randint(1, 3)):
        group = request.resource_spans.add(schema_url=rng.choice(["", "group-url"]))
        group.resource.attributes.add(key="service.name").value.string_value = rng.choice(["shop", "vip"])
        for _ in range(rng.randint(1, 3)):
            scope = group.scope_spans.add(scope={"name": rng.choice(["lib", "zz"])})
            for index in range(rng.randint(0, 14)):
                trace_id = rng.choice(trace_ids) if interleave else trace_ids[(index // 3 + g) % len(trace_ids)]
                span = scope.spans.add(trace_id=trace_id, span_id=rng.randbytes(8),
                                       name="x" * rng.choice([1, 150, 17_000]),
                                       parent_span_id=b"" if rng.random() < 0.3 else rng.randbytes(8),
                                       start_time_unix_nano=0 if rng.random() < 0.05 else _time(rng),
                                       end_time_unix_nano=_time(rng) - 1)
                if rng.random() < 0.1:
                    span.status.code = 2
                if rng.random() < 0.1:
                    span.attributes.add(key="customer").value.string_value = "vip"
    return request


def _model_split(raw: bytes, request: ExportTraceServiceRequest, roots: bool,
                 finders: list[tuple[int, Callable[[bytes], list[int] | None]]]):
    """split_body's body, parts and hints built span by span with the generic field walk: a part
    holds its trace's spans in request order, a group for each run of them in one group, in it a
    scope for each run in one scope. A place outside every span sets its bit for every trace."""
    spans = []  # trace id, group, scope, the span's field, whether it is a root span
    headers = []
    for g, (_, _, group_start, group_end) in enumerate(f for f in fields(raw, 0, len(raw)) if f[0] == 1):
        scope_headers = []
        scope_fields = [f for f in fields(raw, group_start, group_end) if f[0] == 2]
        group_header = [raw[pos:end] for number, pos, _, end in fields(raw, group_start, group_end) if number != 2]
        for s, (_, _, scope_start, scope_end) in enumerate(scope_fields):
            in_scope = fields(raw, scope_start, scope_end)
            scope_headers.append(b"".join(raw[pos:end] for number, pos, _, end in in_scope if number != 2))
            messages = request.resource_spans[g].scope_spans[s].spans
            for span, (_, pos, _, end) in zip(messages, [f for f in in_scope if f[0] == 2], strict=True):
                spans.append((span.trace_id, g, s, pos, end, roots and not span.parent_span_id))
        headers.append((b"".join(group_header), scope_headers))
    by_trace: dict[bytes, list] = {}
    for span in spans:
        by_trace.setdefault(span[0], []).append(span)
    hints = dict.fromkeys(by_trace, 0)
    for bit, find in finders:
        places = find(raw)
        owners = [None] if places is None else [
            next((span[0] for span in spans if span[3] <= at < span[4]), None) for at in places]
        for trace_id in hints if None in owners else owners:
            hints[trace_id] |= bit
    parts = {}
    for trace_id, its in by_trace.items():
        part = b""
        for g, in_group in groupby(its, key=itemgetter(1)):
            scopes = b"".join(
                length_delimited(2, headers[g][1][s] + b"".join(raw[span[3]:span[4]] for span in in_scope))
                for s, in_scope in groupby(in_group, key=itemgetter(2)))
            part += length_delimited(1, headers[g][0] + scopes)
        parts[trace_id] = (raw if len(by_trace) == 1 else part, len(its), any(span[5] for span in its))
    body = b"".join(part for part, _, _ in parts.values())
    return body, [(trace_id, len(part), count, root) for trace_id, (part, count, root) in parts.items()], hints


def _finder(pattern: bytes, most: int) -> Callable[[bytes], list[int] | None]:
    compiled = re.compile(pattern)

    def find(raw: bytes) -> list[int] | None:
        places = [match.start() for match in compiled.finditer(raw)]
        return places if len(places) <= most else None
    return find


def test_split_body_gives_the_bytes_times_and_hints_of_a_span_by_span_model():
    """Every output of the byte split, exactly: body bytes, parts, times and hints, over requests
    whose traces are interleaved or in runs across resources and scopes; finders that find
    places in spans, at a span's first byte, in resources and scopes, too many, or none."""
    finders = [(1, _finder(b"vip", 64)), (2, _finder(b"\x18\x02", 64)), (4, _finder(b"zz", 64)),
               (8, _finder(b"\x0a\x10", 64)), (16, _finder(b"\x12", 64)), (32, lambda raw: None),
               (64, _finder(b"nowhere", 64)), (128, _finder(b"\x1a\x09group-url", 64))]
    rng = random.Random(40)
    seen = {"a trace in several runs": 0, "several parts": 0, "unknown times": 0, "a hint for all": 0,
            "a hint for some": 0}
    for round_ in range(150):
        request = _rich_request(rng)
        raw = request.SerializeToString()
        roots = bool(round_ % 2)
        facts = Facts(read_times=True, finders=finders)
        body, parts = split_body(raw, ExportTraceServiceRequest.FromString(raw), roots, facts)
        expected_body, expected_parts, expected_hints = _model_split(raw, request, roots, finders)
        assert (bytes(body), parts) == (expected_body, expected_parts)
        assert facts.hints == expected_hints
        assert facts.times == _times_of_spans(request)
        trace_ids = [span.trace_id for group in request.resource_spans for scope in group.scope_spans
                     for span in scope.spans]
        seen["a trace in several runs"] += len(list(groupby(trace_ids))) > len(set(trace_ids))
        seen["several parts"] += len(parts) > 1
        seen["unknown times"] += None in facts.times.values()
        seen["a hint for all"] += len(parts) > 1 and all(hint & 1 for hint in facts.hints.values())
        seen["a hint for some"] += len({hint & 3 for hint in facts.hints.values()}) > 1
    assert all(seen.values()), seen


@pytest.mark.parametrize("between", [length_delimited(1, b"\x0a\x01n\x1a\x0a\x0a\x01k\x12\x05\x0a\x03v-1"),
                                     length_delimited(3, b"url"), varint(9 << 3) + varint(1)])
def test_a_scope_field_between_two_spans_of_one_trace_is_in_its_part_once(between):
    """Spans of a trace with a scope field between them are two runs: one range over both would hold
    the field a second time beside the scope header, and protobuf merges a repeated scope (its
    attributes twice)."""
    request = ExportTraceServiceRequest()
    spans = [request.resource_spans.add().scope_spans.add().spans.add(trace_id=bytes([t]) * 16, span_id=bytes([i]) * 8)
             for i, t in enumerate((1, 1, 2))]
    scope = (length_delimited(2, spans[0].SerializeToString()) + between
             + length_delimited(2, spans[1].SerializeToString()) + length_delimited(2, spans[2].SerializeToString()))
    raw = length_delimited(1, length_delimited(2, scope))
    parsed = ExportTraceServiceRequest.FromString(raw)
    got = split_serialized(raw, parsed)
    assert [(trace_id, count) for trace_id, _, count, _ in got] == [(b"\x01" * 16, 2), (b"\x02" * 16, 1)]
    for (_, mine, _, _), (_, part, _, _) in zip(got, _as_message_path(parsed), strict=True):
        mine_scope = ExportTraceServiceRequest.FromString(mine).resource_spans[0].scope_spans[0]
        expected = part.resource_spans[0].scope_spans[0]
        assert list(mine_scope.spans) == list(expected.spans)
        assert (mine_scope.scope, mine_scope.schema_url) == (expected.scope, expected.schema_url)
        assert mine.count(between) == 1


def test_a_match_whose_first_bytes_end_a_false_place_in_the_span_before_is_still_found():
    """A value that begins as it ends (here "ab", then the bytes that open the next span and its
    attribute, then "ab") can be found at the end of one span running into the next, over the
    first bytes of the next span's true match: a search that resumes after each place it finds
    skips that match, and its trace is then ruled out, though its span holds the value."""
    import yaml
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from sampler.policies import build_policies, byte_hints
    from sampler.policies.config import PolicyConfig
    from sampler.trace import Decision, Trace

    first, second = b"\x01" * 16, b"\x02" * 16
    rest = Span(trace_id=second, span_id=b"\x02" * 8).SerializeToString()  # after its attributes
    # a span's key and length, then its attribute's key, length, key "k", value's key and lengths,
    # the string's key and length: what the value holds between its two "ab"
    size = 15  # of the value: "ab", these 11 bytes, "ab"
    head = bytes((0x12, size + 9 + len(rest), 0x4A, size + 7, 0x0A, 1, ord("k"), 0x12, size + 2, 0x0A, size))
    value = b"ab" + head + b"ab"
    attribute = KeyValue(key="k")
    attribute.value.string_value = value.decode()
    late = Span(attributes=[attribute]).SerializeToString() + rest  # its attribute first: still a valid span
    assert length_delimited(2, late).startswith(head) and len(value) == size
    early = Span(trace_id=first, span_id=b"\x01" * 8)
    early.attributes.add(key="note").value.string_value = "xxab"  # its last bytes
    scope = length_delimited(2, early.SerializeToString()) + length_delimited(2, late)
    raw = length_delimited(1, length_delimited(2, scope))
    request = ExportTraceServiceRequest.FromString(raw)
    assert request.resource_spans[0].scope_spans[0].spans[1].attributes[0].value.string_value == value.decode()

    config = PolicyConfig.model_validate(yaml.safe_load(
        "{name: v, type: string_attribute, string_attribute: {key: k, values: [placeholder]}}"))
    config.string_attribute.values = [value.decode()]
    policies = build_policies([config], lambda: 0.0)
    finders, confirms = byte_hints(policies)
    facts = Facts(finders=finders, confirms=confirms)
    policy = policies[0].policy
    for trace_id, part, _, _ in split_serialized(raw, request, facts=facts):
        parsed = Trace(trace_id, batches=list(ExportTraceServiceRequest.FromString(part).resource_spans))
        hinted = Trace(trace_id, raw=[part], hints=facts.hints[trace_id],
                       parse=lambda body: ExportTraceServiceRequest.FromString(body).resource_spans)
        assert policy.evaluate(hinted) is policy.evaluate(parsed), trace_id
    assert policy.evaluate(Trace(second, batches=list(request.resource_spans))) is Decision.SAMPLED
