"""composite: rate allocation per sub-policy within each second, on a fake clock."""

from __future__ import annotations

from sampler.policies import Evaluator, build_policy
from sampler.policies.composite import shares
from sampler.trace import Decision, Trace
from tests.sampler.policies.traces import FakeClock, policy_config, span, spans_trace

S, N = Decision.SAMPLED, Decision.NOT_SAMPLED

# otelcol's README example, shortened: 50 % for key1, 25 % for key2, the rest for always_sample
README_COMPOSITE = """
name: composite-policy-1
type: composite
composite:
  max_total_spans_per_second: 100
  policy_order: [by-key1, by-key2, the-rest]
  composite_sub_policy:
    - {name: by-key1, type: string_attribute, string_attribute: {key: key1, values: [a]}}
    - {name: by-key2, type: string_attribute, string_attribute: {key: key2, values: [b]}}
    - {name: the-rest, type: always_sample}
  rate_allocation:
    - {policy: by-key1, percent: 50}
    - {policy: by-key2, percent: 25}
"""


def ten_spans(attrs: dict | None = None) -> Trace:
    return spans_trace(*(span(attrs) for _ in range(10)))


KEY1, KEY2, OTHER = ten_spans({"key1": "a"}), ten_spans({"key2": "b"}), ten_spans()


def built(snippet: str) -> tuple[Evaluator, FakeClock]:
    clock = FakeClock()
    return build_policy(policy_config(snippet), clock), clock


def offer(policy, item: Trace, times: int) -> list[Decision]:
    return [policy.evaluate(item) for _ in range(times)]


def test_shares_are_percentages_and_an_equal_share_for_the_rest():
    config = policy_config(README_COMPOSITE).composite
    assert shares(config) == {"by-key1": 50, "by-key2": 25, "the-rest": 33}  # 100 / 3, truncated


def test_each_sub_policy_keeps_its_share_of_a_second_and_the_next_second_resets():
    policy, clock = built(README_COMPOSITE)
    assert offer(policy, KEY1, 6) == [S] * 5 + [N]       # 50 spans a second
    assert offer(policy, KEY2, 3) == [S, S, N]           # 25
    assert offer(policy, OTHER, 4) == [S, S, S, N]       # 33
    # the first sub-policy that matches decides: key1 traces over their share are not passed on
    # to always_sample, which still has room in this second
    both = ten_spans({"key1": "a", "key2": "b"})
    assert policy.evaluate(both) is N
    clock.advance(0.999)
    assert offer(policy, KEY1, 1) == [N]
    clock.advance(0.001)                                 # 1001.0: a new second
    assert offer(policy, KEY1, 6) == [S] * 5 + [N]
    assert offer(policy, both, 1) == [N]
    clock.advance(1.5)
    assert offer(policy, both, 1) == [S]


def test_a_refused_trace_leaves_room_for_a_smaller_one():
    policy, _ = built(README_COMPOSITE)
    big = spans_trace(*(span({"key1": "a"}) for _ in range(45)))
    assert [policy.evaluate(big), policy.evaluate(big), policy.evaluate(KEY1)] == [S, N, N]
    assert policy.evaluate(spans_trace(*(span({"key1": "a"}) for _ in range(5)))) is S  # exactly 50


def test_shares_totalling_the_maximum_cap_the_spans_kept_each_second():
    policy, clock = built("""
        name: c
        type: composite
        composite:
          max_total_spans_per_second: 60
          composite_sub_policy:
            - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
            - {name: all, type: always_sample}
          rate_allocation: [{policy: errors, percent: 50}, {policy: all, percent: 50}]
        """)
    errors = spans_trace(*(span(status="ERROR") for _ in range(10)))
    for second in range(3):
        kept = sum(10 for item in [errors, OTHER] * 10 if policy.evaluate(item) is S)
        assert kept == 60, f"second {second}"
        clock.advance(1)


def test_max_total_caps_a_sub_policy_allocated_more_than_it():
    policy, _ = built("""
        {name: c, type: composite, composite: {max_total_spans_per_second: 30,
         composite_sub_policy: [{name: all, type: always_sample}], rate_allocation: [{policy: all, percent: 150}]}}
        """)
    assert offer(policy, OTHER, 4) == [S, S, S, N]


def test_and_sub_policy_and_inverted_matches_count_as_matches():
    policy, _ = built("""
        name: c
        type: composite
        composite:
          max_total_spans_per_second: 20
          composite_sub_policy:
            - name: not-key1
              type: string_attribute
              string_attribute: {key: key1, values: [a], invert_match: true}
            - name: key1-and-errors
              type: and
              and: {and_sub_policy: [{type: string_attribute, string_attribute: {key: key1, values: [a]}},
                                     {type: status_code, status_code: {status_codes: [ERROR]}}]}
        """)
    key1_error = spans_trace(*(span({"key1": "a"}, status="ERROR") for _ in range(10)))
    assert offer(policy, OTHER, 2) == [S, N]        # the first samples it (no key1=a): its share is 10
    assert offer(policy, key1_error, 2) == [S, N]   # the first does not: on to the and
    assert offer(policy, KEY1, 1) == [N]            # neither matches
