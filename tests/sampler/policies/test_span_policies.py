"""status_code, latency, span_count, trace_state, trace_flags and always_sample, row by row.

Each row is a policy as it stands in `policies:` and the decision it gives each trace of its
table (S sampled, N not sampled). Times are in milliseconds.
"""

from __future__ import annotations

import pytest

from sampler.trace import Trace
from tests.sampler.policies.traces import decisions, span, spans_trace


def check(snippet: str, traces: dict, expected: str) -> None:
    assert decisions(snippet, traces) == dict(zip(traces, expected.split(), strict=True))


STATUS_TRACES = {
    "ok": spans_trace(span(status="OK")),
    "error": spans_trace(span(status="ERROR")),
    "unset": spans_trace(span()),
    "ok_then_error": spans_trace(span(status="OK"), span(status="ERROR")),
    "no_spans": Trace(trace_id=bytes(16)),
}


@pytest.mark.parametrize("snippet, expected", [
    pytest.param("{name: p, type: status_code, status_code: {status_codes: [ERROR]}}", "N S N S N", id="error"),
    pytest.param("{name: p, type: status_code, status_code: {status_codes: [OK, UNSET]}}", "S N S S N", id="ok-unset"),
    pytest.param("{name: p, type: status_code, status_code: {status_codes: [UNSET]}}", "N N S N N", id="unset"),
])
def test_status_code_decides_each_trace_as_otelcol(snippet, expected):
    check(snippet, STATUS_TRACES, expected)


LATENCY_TRACES = {
    "fast": spans_trace(span(start_ms=0, end_ms=100)),
    "slow": spans_trace(span(start_ms=0, end_ms=6000)),
    "exactly_5s": spans_trace(span(start_ms=0, end_ms=5000)),
    "spread_over_spans": spans_trace(span(start_ms=0, end_ms=100), span(start_ms=4000, end_ms=5100)),
    "just_under_5s": spans_trace(span(start_ms=0, end_ms=4999.9)),  # 4999 whole milliseconds
    "long_after_a_short_prefix": spans_trace(span(start_ms=0, end_ms=1500), span(start_ms=0, end_ms=20000)),
    "late_span_first": spans_trace(span(start_ms=10000, end_ms=10100), span(start_ms=0, end_ms=100)),
    "instant": spans_trace(span(start_ms=0, end_ms=0)),
    "ends_before_start": spans_trace(span(start_ms=100, end_ms=0)),
    "ends_half_ms_before_start": spans_trace(span(start_ms=0.5, end_ms=0)),  # -0.5 ms truncates to 0
}


@pytest.mark.parametrize("snippet, expected", [
    # otelcol 0.165 keeps traces strictly longer than the threshold: exactly 5 s is not sampled
    pytest.param("{name: p, type: latency, latency: {threshold_ms: 5000}}", "N S N S N S S N N N", id="threshold"),
    pytest.param("{name: p, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000}}",
                 "N S N S N N N N N N", id="threshold-exclusive-with-upper"),
    # otelcol decides on the running duration: a prefix in range samples a trace that ends up longer
    pytest.param("{name: p, type: latency, latency: {upper_threshold_ms: 1000}}", "S N N S N N S N N N",
                 id="upper-threshold-only"),
    pytest.param("{name: p, type: latency, latency: {threshold_ms: 1000, upper_threshold_ms: 2000}}",
                 "N N N N N S N N N N", id="window-on-a-prefix"),
    pytest.param("{name: p, type: latency, latency: {threshold_ms: 0}}", "S S S S S S S N N N", id="zero-threshold"),
])
def test_latency_decides_each_trace_as_otelcol(snippet, expected):
    check(snippet, LATENCY_TRACES, expected)


def _spans(count: int) -> Trace:
    return spans_trace(*(span() for _ in range(count)))


SPAN_COUNT_TRACES = {"one": _spans(1), "two": _spans(2), "five": _spans(5), "twenty": _spans(20),
                     "twenty_one": _spans(21)}


@pytest.mark.parametrize("snippet, expected", [
    pytest.param("{name: p, type: span_count, span_count: {min_spans: 2, max_spans: 20}}", "N S S S N", id="range"),
    pytest.param("{name: p, type: span_count, span_count: {min_spans: 2}}", "N S S S S", id="min-only"),
    pytest.param("{name: p, type: span_count, span_count: {max_spans: 5}}", "S S S N N", id="max-only"),
    pytest.param("{name: p, type: span_count, span_count: {min_spans: 5, max_spans: 5}}", "N N S N N",
                 id="exactly"),
    pytest.param("{name: p, type: span_count, span_count: {}}", "S S S S S", id="no-bounds"),
])
def test_span_count_decides_each_trace_as_otelcol(snippet, expected):
    check(snippet, SPAN_COUNT_TRACES, expected)


def _members(count: int) -> str:
    return ",".join([f"vendor{number}=x" for number in range(count - 1)] + ["key3=value1"])


TRACE_STATE_TRACES = {
    "match": spans_trace(span(trace_state="key3=value1")),
    "other_value": spans_trace(span(trace_state="key3=zzz")),
    "other_key": spans_trace(span(trace_state="rojo=value1")),
    "among_members_with_spaces": spans_trace(span(trace_state="rojo=00f067aa0ba902b7 ,\tkey3=value2")),
    "duplicate_key": spans_trace(span(trace_state="key3=value1,key3=value2")),
    "member_without_key": spans_trace(span(trace_state="key3=value1,=x")),
    "upper_case_key": spans_trace(span(trace_state="Key3=value1")),
    "no_trace_state": spans_trace(span()),
    "second_span": spans_trace(span(), span(trace_state="key3=value1")),
    "32_members": spans_trace(span(trace_state=_members(32))),
    "33_members": spans_trace(span(trace_state=_members(33))),
    "empty_members": spans_trace(span(trace_state=",,key3=value1,")),
}


@pytest.mark.parametrize("snippet, expected", [
    pytest.param("{name: p, type: trace_state, trace_state: {key: key3, values: [value1, value2]}}",
                 "S N N S N N N N S S N S", id="key-values"),
    pytest.param("{name: p, type: trace_state, trace_state: {key: rojo, values: [00f067aa0ba902b7]}}",
                 "N N N S N N N N N N N N", id="other-key"),
    # otelcol skips "": a span without the key (read as "") stays unmatched
    pytest.param("{name: p, type: trace_state, trace_state: {key: key3, values: [value1, '']}}",
                 "S N N N N N N N S S N S", id="values-with-an-empty-string"),
])
def test_trace_state_decides_each_trace_as_otelcol(snippet, expected):
    check(snippet, TRACE_STATE_TRACES, expected)


def test_trace_state_reads_multi_tenant_keys():
    traces = {"tenant": spans_trace(span(trace_state="acme@vendor=v")),
              "digit_tenant": spans_trace(span(trace_state="1acme@vendor=v")),
              "digit_system": spans_trace(span(trace_state="acme@1vendor=v"))}
    check("{name: p, type: trace_state, trace_state: {key: acme@vendor, values: [v]}}", traces, "S N N")
    check("{name: p, type: trace_state, trace_state: {key: 1acme@vendor, values: [v]}}", traces, "N S N")


def test_trace_flags_samples_a_trace_with_the_sampled_bit_on_any_span():
    traces = {"unsampled": spans_trace(span(flags=0)), "sampled": spans_trace(span(flags=0x01)),
              "sampled_with_high_bits": spans_trace(span(flags=0x301)),
              "high_bits_only": spans_trace(span(flags=0x300)),
              "second_span": spans_trace(span(), span(flags=0x01))}
    check("{name: p, type: trace_flags}", traces, "N S S N S")


def test_always_sample_samples_every_trace():
    check("{name: p, type: always_sample}", {"empty": Trace(trace_id=bytes(16)), "one": _spans(1)}, "S S")


def _lazy(body: bytes) -> tuple[Trace, list[bytes]]:
    """A trace as the stage builds it (its request bytes, parsed only when a policy asks), and
    the bodies parsed so far."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    parsed: list[bytes] = []

    def parse(data: bytes) -> list:
        parsed.append(data)
        return list(ExportTraceServiceRequest.FromString(data).resource_spans)
    return Trace(trace_id=bytes(16), span_count=1, size_bytes=len(body), raw=[body], parse=parse), parsed


def _request_with_status(code_field: bytes, trace_id: bytes = bytes(16)) -> bytes:
    """One span whose Status is written as the given bytes: field 3 (code) in any valid encoding."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="op", trace_id=trace_id, span_id=bytes(8))
    status = b"\x7a" + bytes([len(code_field)]) + code_field  # Span.status (field 15)
    span = request.resource_spans[0].scope_spans[0].spans[0].SerializeToString() + status
    scope = b"\x12" + bytes([len(span)]) + span
    resource = b"\x12" + bytes([len(scope)]) + scope
    return b"\x0a" + bytes([len(resource)]) + resource


@pytest.mark.parametrize("code_field, expected", [
    pytest.param(b"\x18\x02", "S", id="error"),
    pytest.param(b"\x18\x82\x00", "S", id="error-varint-in-two-bytes"),
    pytest.param(b"\x18\x82\x80\x80\x80\x10", "S", id="error-with-high-bits-beyond-int32"),
    pytest.param(b"\x98\x00\x02", "S", id="error-tag-in-two-bytes"),
    pytest.param(b"\x98\x80\x00\x82\x00", "S", id="error-tag-and-varint-in-more-bytes"),
    pytest.param(b"\x18\x01", "N", id="ok"),
    pytest.param(b"", "N", id="unset"),
])
def test_status_code_on_request_bytes_finds_every_encoding_of_the_code(code_field, expected):
    """A trace ruled out by its bytes must be one whose spans, parsed, have no such status."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    body = _request_with_status(code_field)
    parsed_code = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0].status.code
    assert (parsed_code == 2) == (expected == "S")  # the encoding is one protobuf reads as ERROR
    assert decisions("{name: p, type: status_code, status_code: {status_codes: [ERROR]}}",
                     {"t": _lazy(body)[0]}) == {"t": expected}


def test_status_code_finds_a_long_tag_after_bytes_that_only_look_like_its_start():
    body = _request_with_status(b"\x98\x00\x02", trace_id=b"\x98\x01\x98\x7f" + bytes(12))
    assert decisions("{name: p, type: status_code, status_code: {status_codes: [ERROR]}}",
                     {"t": _lazy(body)[0]}) == {"t": "S"}


def test_status_code_places_are_every_tag_and_code_pair_and_every_long_tag_in_the_bytes():
    """Its places (Facts.finders) miss no byte pair a span with the code may hold, short or long,
    at the end of the bytes too, over random bytes dense in those pairs."""
    import random
    import re

    from sampler.policies.config import StatusCodeConfig
    from sampler.policies.status_code import StatusCode
    from sampler.policies.view import MAX_PLACES

    policy = StatusCode(StatusCodeConfig(status_codes=["ERROR"]))
    pairs = re.compile(b"\\x18[\\x02\\x82]|\\x98[\\x80\\x00]")
    rng = random.Random(3)
    alphabet = b"\x18\x02\x82\x98\x80\x00\x01\x7f"
    for _ in range(300):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) + rng.choice([b"", b"\x98", b"\x18"])
        expected = [match.start() for match in pairs.finditer(data)]
        got = policy.places(data)
        assert (sorted(got) if got is not None else None) == (expected if len(expected) <= MAX_PLACES else None)


def test_status_code_rules_out_a_trace_without_the_code_without_parsing_it():
    lazy, parsed = _lazy(_request_with_status(b"\x18\x01"))
    assert decisions("{name: p, type: status_code, status_code: {status_codes: [ERROR]}}", {"t": lazy}) == {"t": "N"}
    assert parsed == []


def test_latency_reads_an_unset_start_as_otelcol_does_not_as_the_earliest():
    """A span whose start is 0 (unset) makes the next start the earliest, so a trace whose
    other spans last 100 ms is not 'as long as the epoch'."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span
    unset_first = spans_trace(Span(name="unset"), span(start_ms=0, end_ms=100))
    check("{name: p, type: latency, latency: {threshold_ms: 5000}}", {"unset_first": unset_first}, "N")


@pytest.mark.parametrize("threshold_ms", [0, 1, 400])
def test_latency_over_a_round_of_traces_with_times_decides_as_trace_by_trace(threshold_ms):
    """Judged in C from each trace's times: the same as evaluate at the millisecond boundaries
    (truncated), for negative durations, and when some trace's times are unknown."""
    import random

    from sampler.policies import build_policy
    from tests.sampler.policies.traces import policy_config

    rng = random.Random(threshold_ms)
    policy = build_policy(policy_config(f"{{name: s, type: latency, latency: {{threshold_ms: {threshold_ms}}}}}"),
                          lambda: 0.0)
    edge = threshold_ms * 1_000_000
    durations = [edge - 1, edge, edge + 999_999, edge + 1_000_000, edge + 1_000_001, 0, -1, -2_000_000,
                 *(rng.randrange(-10**9, 10**10) for _ in range(200))]
    start = 1_700_000_000 * 10**9
    traces = [Trace.unread(rng.randbytes(16), 1, 10, (start, start + duration), None) for duration in durations]
    assert policy.evaluate_many(traces) == [policy.evaluate(trace) for trace in traces]
    assert policy.evaluate_many([]) == []
    some_unknown = [*traces[:5], spans_trace(span({}, start_ms=0, end_ms=threshold_ms + 2)), *traces[5:]]
    assert policy.evaluate_many(some_unknown) == [policy.evaluate(trace) for trace in some_unknown]


_T = 1_700_000_000 * 10**9
_WRAPPING = {  # spans as (start, end) in nanoseconds, as the wire holds them (unsigned)
    # otelcol takes int64(maxTime-minTime): unsigned, wrapped round to a signed difference
    "end_past_2262": [(_T, 2**64 - 1)],                       # -1 ns - _T: negative
    "end_past_2262_first": [(_T, 2**64 - 1), (_T, _T + 2 * 10**9)],  # still the latest end, unsigned
    "start_past_2262": [(2**64 - 10**9, 10**9)],              # 2 s, round the wrap
    "longer_than_int64": [(1, 2**63 + 2 * 10**9)],            # more than 2**63 ns: negative
}


@pytest.mark.parametrize("snippet, expected", [
    ("{name: p, type: latency, latency: {threshold_ms: 1000}}", "N N S N"),
    ("{name: p, type: latency, latency: {threshold_ms: 1000, upper_threshold_ms: 9223372036854}}", "N N S N"),
])
def test_latency_wraps_a_difference_of_times_past_2262_round_as_otelcol_does(snippet, expected):
    """otelcol 0.165 takes a trace's running duration as int64(maxTime-minTime) nanoseconds, the
    times compared and subtracted unsigned: past 2262 the difference wraps round. Whether the
    trace is judged from its spans or from the times its split read."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from sampler.policies import build_policy
    from sampler.split import Facts, split_serialized
    from tests.sampler.policies.traces import SHORT, policy_config

    traces, known = {}, {}
    for number, (name, times) in enumerate(_WRAPPING.items()):
        trace_id = bytes([number + 1]) * 16
        spans = [Span(trace_id=trace_id, span_id=b"\x01" * 8, name="op", start_time_unix_nano=start,
                      end_time_unix_nano=end) for start, end in times]
        traces[name] = spans_trace(*spans)
        request = ExportTraceServiceRequest(resource_spans=traces[name].batches)
        facts = Facts(read_times=True)
        [(_, part, _, _)] = split_serialized(request.SerializeToString(), request, facts=facts)
        known[name] = Trace(trace_id, raw=[part], times=facts.times.get(trace_id),
                            parse=lambda body: list(ExportTraceServiceRequest.FromString(body).resource_spans))
    check(snippet, traces, expected)
    check(snippet, known, expected)
    policy = build_policy(policy_config(snippet), lambda: 0.0)
    short = {decision: letter for letter, decision in SHORT.items()}
    assert " ".join(short[decision] for decision in policy.evaluate_many(list(known.values()))) == expected
