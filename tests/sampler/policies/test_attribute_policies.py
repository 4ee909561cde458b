"""string_attribute, numeric_attribute and boolean_attribute, row by row against otelcol's behaviour.

Each row is a policy as it stands in `policies:` and the decision it gives each trace below:
S sampled, N not sampled (invert_match turns them round, as otelcol 0.165 does).
"""

from __future__ import annotations

import pytest

from sampler.policies import build_policy
from sampler.policies.config import compile_go_regex
from tests.sampler.policies.traces import decisions, policy_config, span, spans_trace

STRING_TRACES = {
    "missing": spans_trace(span({"other": "v1"}), resource={"service.name": "api"}),
    "span": spans_trace(span({"k": "v1"})),
    "other_value": spans_trace(span({"k": "zzz"})),
    "resource": spans_trace(span(), resource={"k": "v1"}),
    "empty_string": spans_trace(span({"k": ""})),
    "int_value": spans_trace(span({"k": 5})),
    "resource_int": spans_trace(span(), resource={"k": 5}),
    "one_of_two_spans": spans_trace(span({"k": "zzz"}), span({"k": "v1"})),
    "inside_longer": spans_trace(span({"k": "prefix-v1-suffix"})),
    "trailing_newline": spans_trace(span({"k": "v1\n"})),  # Go's $ does not match before it
}



def rows(kind: str, table: list[tuple[str, str, str]]) -> list:
    """pytest params from (the policy's block, expected decisions, id) rows of one policy type."""
    return [pytest.param(f"{{name: p, type: {kind}, {kind}: {block}}}", expected, id=name)
            for block, expected, name in table]


STRING_ROWS = rows("string_attribute", [
    ("{key: k, values: [v1, v2]}", "N S N S N N N S N N", "exact"),
    ("{key: k, values: [v1, v2], invert_match: true}", "S N S N S S S N S S", "exact-inverted"),
    # otelcol skips "" in exact values: a resource attribute of another type (read as "") stays unmatched
    ("{key: k, values: [v1, v2, '']}", "N S N S N N N S N N", "exact-with-an-empty-string"),
    ("{key: k, values: ['v[0-9]'], enabled_regex_matching: true}", "N S N S N N N S S S", "regex-unanchored"),
    ("{key: k, values: ['^v1$'], enabled_regex_matching: true, cache_max_size: 1}", "N S N S N N N S N N",
     "regex-anchored-by-the-user"),
    ("{key: k, values: ['^nomatch$'], enabled_regex_matching: true}", "N N N N N N N N N N", "regex-without-match"),
    # a resource attribute of another type is matched as "", a span's empty string never
    ("{key: k, values: ['.*'], enabled_regex_matching: true}", "N S S S N N S S S S", "regex-matching-everything"),
    ("{key: k, values: ['v[0-9]'], enabled_regex_matching: true, invert_match: true}",
     "S N S N S S S N N N", "regex-inverted"),
])

NUMERIC_TRACES = {
    "missing": spans_trace(span({"other": 75})),
    "in_range": spans_trace(span({"k": 75})),
    "below": spans_trace(span({"k": 10})),
    "above": spans_trace(span({"k": 500})),
    "at_min": spans_trace(span({"k": 50})),
    "at_max": spans_trace(span({"k": 100})),
    "double": spans_trace(span({"k": 75.0})),  # reads as 0, as pdata's Int() does
    "string": spans_trace(span({"k": "75"})),
    "no_value": spans_trace(span({"k": None})),
    "resource": spans_trace(span(), resource={"k": 75}),
    "negative": spans_trace(span({"k": -5})),
}

NUMERIC_ROWS = rows("numeric_attribute", [
    ("{key: k, min_value: 50, max_value: 100}", "N S N N S S N N N S N", "range"),
    ("{key: k, min_value: 50}", "N S N S S S N N N S N", "min-only"),
    ("{key: k, max_value: 100}", "N S S N S S S S S S S", "max-only-wrong-types-read-as-zero"),
    ("{key: k, min_value: -10, max_value: -1}", "N N N N N N N N N N S", "negative-range"),
    ("{key: k, min_value: 50, max_value: 100, invert_match: true}", "S N S S N N S S S N S",
     "range-inverted"),
])

BOOLEAN_TRACES = {
    "missing": spans_trace(span({"other": True})),
    "true": spans_trace(span({"k": True})),
    "false": spans_trace(span({"k": False})),
    "string_true": spans_trace(span({"k": "true"})),  # reads as false, as pdata's Bool() does
    "resource_true": spans_trace(span({"k": False}), resource={"k": True}),
}

BOOLEAN_ROWS = rows("boolean_attribute", [
    ("{key: k, value: true}", "N S N N S", "true"),
    ("{key: k, value: false}", "N N S S S", "false-matches-wrong-types"),
    ("{key: k, value: true, invert_match: true}", "S N S S N", "true-inverted"),
])


def check(snippet: str, traces: dict, expected: str) -> None:
    assert decisions(snippet, traces) == dict(zip(traces, expected.split(), strict=True))


@pytest.mark.parametrize("snippet, expected", STRING_ROWS)
def test_string_attribute_decides_each_trace_as_otelcol(snippet, expected):
    check(snippet, STRING_TRACES, expected)


@pytest.mark.parametrize("snippet, expected", NUMERIC_ROWS)
def test_numeric_attribute_decides_each_trace_as_otelcol(snippet, expected):
    check(snippet, NUMERIC_TRACES, expected)


@pytest.mark.parametrize("snippet, expected", BOOLEAN_ROWS)
def test_boolean_attribute_decides_each_trace_as_otelcol(snippet, expected):
    check(snippet, BOOLEAN_TRACES, expected)


def test_duplicate_key_counts_with_its_first_value():
    traces = {"first_matches": spans_trace(_duplicated("v1", "zzz")),
              "second_matches": spans_trace(_duplicated("zzz", "v1"))}
    check("{name: p, type: string_attribute, string_attribute: {key: k, values: [v1]}}", traces, "S N")


def _duplicated(first: str, second: str):
    out = span()
    out.attributes.add(key="k").value.string_value = first
    out.attributes.add(key="k").value.string_value = second
    return out


def test_regex_results_are_cached_least_recently_used_up_to_cache_max_size():
    policy = build_policy(policy_config("""
        {name: p, type: string_attribute,
         string_attribute: {key: k, values: ['^a'], enabled_regex_matching: true, cache_max_size: 2}}"""), None)
    for value in ("a1", "b1", "a1", "c1"):  # a1 is used again before c1 arrives, so b1 is the one evicted
        policy.evaluate(spans_trace(span({"k": value})))
    assert list(policy.cache.items()) == [("a1", True), ("c1", False)]


def test_regex_cache_defaults_to_otelcols_128_entries():
    policy = build_policy(policy_config("""
        {name: p, type: string_attribute, string_attribute: {key: k, values: ['x'], enabled_regex_matching: true}}"""),
                          None)
    for number in range(200):
        policy.evaluate(spans_trace(span({"k": f"value-{number}"})))
    assert len(policy.cache) == 128 and next(iter(policy.cache)) == "value-72"


@pytest.mark.parametrize("pattern, matching, not_matching", [
    (r"^/health$", ["/health"], ["/health\n", "/healthz"]),
    (r"^/health\z", ["/health"], ["/health\n"]),
    (r"[$]x$", ["$x"], ["$x\n", "x"]),
    (r"(?m)^a$", ["a\nb", "a\n"], ["ab"]),
    (r"a\$", ["a$"], ["a"]),
    (r"[]x]$", ["]", "x"], ["]\n"]),
])
def test_go_regular_expressions_match_what_they_match_in_go(pattern, matching, not_matching):
    compiled = compile_go_regex(pattern)
    assert [text for text in matching + not_matching if compiled.search(text)] == matching
