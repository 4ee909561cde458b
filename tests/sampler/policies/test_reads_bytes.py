"""reads_bytes: whether deciding a trace may read its spans, so that the stage can decide the
others on what its buffer knows of them (sampler.split.Facts). A wrong "no" would decide a
trace on spans it never saw; the stage then reads everything (SpansNotRead)."""

from __future__ import annotations

import pytest

from sampler.policies import build_policies, byte_hints, decide, never_reads, reads_bytes
from sampler.trace import Decision, Trace
from tests.sampler.policies.traces import FakeClock, policy_config


def _policies(*snippets: str):
    policies = build_policies([policy_config(snippet) for snippet in snippets], FakeClock())
    finders, confirms = byte_hints(policies)
    bits = {name: bit for name, (bit, _) in zip(("first", "second"), finders, strict=False)}
    bits |= {f"{name} matched": confirms[bit][1] | bit for name, bit in list(bits.items()) if bit in confirms}
    return policies, bits


ERRORS = "{type: status_code, status_code: {status_codes: [ERROR]}}"
CHECKOUT = "{type: string_attribute, string_attribute: {key: http.route, values: [/checkout]}}"
NOT_CHECKOUT = ("{type: string_attribute, string_attribute: {key: http.route, values: [/checkout], "
                "invert_match: true}}")


@pytest.mark.parametrize("subs, hints, reads", [
    # the first sub-policy refuses on its hint alone: the second is never evaluated
    ((ERRORS, CHECKOUT), {"second"}, False),
    ((ERRORS, CHECKOUT), {"first"}, True),  # the first may find an error code in them
    ((ERRORS, CHECKOUT), {"first", "second"}, True),
    # a sub-policy matched as the spans arrived reads nothing; the next one reads what it reads
    ((ERRORS, CHECKOUT), {"first matched"}, False),
    ((ERRORS, CHECKOUT), {"first matched", "second"}, True),
    ((ERRORS, CHECKOUT), {"first matched", "second matched"}, False),
    # an inverted match is no refusal: it samples when the bytes rule a match out
    ((NOT_CHECKOUT, ERRORS), set(), False),
    ((NOT_CHECKOUT, ERRORS), {"second"}, True),
    ((NOT_CHECKOUT, ERRORS), {"first"}, True),
])
def test_an_and_policy_reads_only_what_its_sub_policies_read_in_turn(subs, hints, reads):
    text = "{name: both, type: and, and: {and_sub_policy: [" + ", ".join(subs) + "]}}"
    policies, bits = _policies(text)
    trace = Trace.unread(b"\x01" * 16, 1, 100, None, sum(bits[name] for name in hints))
    assert any(reads_bytes(named.policy, trace) for named in policies) is reads
    if not reads:  # and it decides without them
        assert decide(policies, trace)[0] in (Decision.SAMPLED, Decision.NOT_SAMPLED)


def test_a_trace_without_hints_is_read_by_every_byte_searching_policy():
    policies, _ = _policies("{name: e, type: status_code, status_code: {status_codes: [ERROR]}}",
                            "{name: c, type: string_attribute, string_attribute: {key: k, values: [v]}}")
    trace = Trace.unread(b"\x01" * 16, 1, 100, None, None)
    assert all(reads_bytes(named.policy, trace) for named in policies)


def test_an_unread_trace_has_every_slot_set_and_refuses_its_spans():
    from sampler.trace import SpansNotRead

    trace = Trace.unread(b"\x02" * 16, 3, 300, (1, 2), 5)
    for slot in Trace.__slots__:
        getattr(trace, slot)  # a slot left unset raises AttributeError
    assert (trace.span_count, trace.size_bytes, trace.times, trace.hints, trace.parsed) == (3, 300, (1, 2), 5, False)
    with pytest.raises(SpansNotRead):
        trace.batches  # noqa: B018


@pytest.mark.parametrize("snippet", [
    "{type: always_sample}",
    "{type: probabilistic, probabilistic: {sampling_percentage: 10}}",
    "{type: rate_limiting, rate_limiting: {spans_per_second: 10}}",
    "{type: span_count, span_count: {min_spans: 2}}",
])
def test_policies_that_judge_a_trace_without_its_spans_say_so_once_not_per_trace(snippet):
    """The stage skips a policy whose reads_bytes is never_reads instead of asking it about each
    trace; one that judged by bytes must not claim it (the stage would decide without them)."""
    policies, _ = _policies("{name: p, " + snippet[1:])
    assert policies[0].policy.reads_bytes is never_reads
    assert decide(policies, Trace.unread(b"\x03" * 16, 3, 300, None, None))[0] in (
        Decision.SAMPLED, Decision.NOT_SAMPLED)


def test_only_traces_with_spans_to_share_get_a_shared_view_while_decided():
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

    from sampler.policies.view import start_deciding, stop_deciding

    unread = Trace.unread(b"\x04" * 16, 1, 10, None, None)
    to_parse = Trace(b"\x05" * 16, raw=[b""], parse=lambda body: [])
    given = Trace(b"\x06" * 16, batches=[ResourceSpans()])
    sharing = start_deciding([unread, to_parse, given])
    assert unread.view is None and to_parse.view == [None, None] and given.view == [None, None]
    stop_deciding(sharing)
    assert to_parse.view is None and given.view is None


@pytest.mark.parametrize("snippet", [
    "{name: e, type: status_code, status_code: {status_codes: [ERROR]}}",
    "{name: v, type: string_attribute, string_attribute: {key: customer, values: [vip]}}",
    "{name: n, type: string_attribute, string_attribute: {key: customer, values: [vip], invert_match: true}}",
    "{name: b, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}",
])
@pytest.mark.parametrize("with_bits", [True, False])
def test_a_round_of_traces_is_judged_by_hints_as_one_trace_at_a_time(snippet, with_bits):
    """reads_many and evaluate_many answer from hints in C where every trace's hints are known:
    the same answers as reads_bytes and evaluate per trace, with unknown hints among them or not."""
    import random

    rng = random.Random(len(snippet))
    policies = build_policies([policy_config(snippet)], FakeClock())
    if with_bits:
        byte_hints(policies)
    policy = policies[0].policy
    for unknown in (0.0, 0.2):
        traces = [Trace.unread(rng.randbytes(16), 1, 10, None, None if rng.random() < unknown else rng.getrandbits(3))
                  for _ in range(300)]
        assert policy.reads_many(traces) == [policy.reads_bytes(trace) for trace in traces]
        judged = [trace for trace, read in zip(traces, policy.reads_many(traces), strict=True) if not read]
        assert policy.evaluate_many(judged) == [policy.evaluate(trace) for trace in judged]


def test_a_finder_that_cannot_tell_is_left_out_but_searches_again_now_and_then():
    """After `give_up` requests in a row with too many places it answers anywhere (None) without
    searching, but for one request in `probe`; a search that can tell again brings it back."""
    from sampler.policies.view import SparingFinder

    searched: list[bytes] = []
    answers = {b"common": None, b"rare": [3]}

    def find(raw: bytes) -> list[int] | None:
        searched.append(raw)
        return answers[raw]

    finder = SparingFinder(find, give_up=3, probe=5)
    assert [finder(b"common") for _ in range(3)] == [None] * 3 and len(searched) == 3
    assert [finder(b"rare") for _ in range(4)] == [None] * 4 and len(searched) == 3  # left out
    assert finder(b"rare") == [3] and len(searched) == 4  # the fifth: searched, and it can tell
    assert finder(b"rare") == [3] and len(searched) == 5  # back to searching every request
    assert [finder(b"common") for _ in range(3)] == [None] * 3 and len(searched) == 8
    assert [finder(b"common") for _ in range(10)] == [None] * 10 and len(searched) == 10  # probes only
