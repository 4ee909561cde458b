"""decide: how the policies' decisions combine into keep, drop or not, as otelcol's makeDecision does."""

from __future__ import annotations

import random

import pytest
import yaml

from sampler.policies import build_policies, byte_hints, decide, decide_many
from sampler.policies.config import PolicyConfig
from sampler.trace import Decision, Trace
from tests.sampler.policies.traces import SHORT, FakeClock, batch, span, spans_trace

POLICIES = {
    "all": "{name: all, type: always_sample}",
    "errors": "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}",
    "not-health": """{name: not-health, type: string_attribute,
                      string_attribute: {key: http.route, values: [/health], invert_match: true}}""",
    "drop-health": """{name: drop-health, type: drop, drop: {drop_sub_policy: [
                        {type: string_attribute, string_attribute: {key: http.route, values: [/health]}}]}}""",
    "drop-debug": """{name: drop-debug, type: drop, drop: {drop_sub_policy: [
                        {type: boolean_attribute, boolean_attribute: {key: debug, value: true}}]}}""",
    "slow": "{name: slow, type: latency, latency: {threshold_ms: 1000}}",
    "not-errors": "{name: not-errors, type: not, not: {not_sub_policy: {type: status_code, "
                  "status_code: {status_codes: [ERROR]}}}}",
    "error-and-not-health": """{name: error-and-not-health, type: and, and: {and_sub_policy: [
                        {type: status_code, status_code: {status_codes: [ERROR]}},
                        {type: string_attribute, string_attribute: {key: http.route, values: [/health],
                                                                     invert_match: true}}]}}""",
}

TRACES = {
    "health": spans_trace(span({"http.route": "/health"})),
    "health_error": spans_trace(span({"http.route": "/health"}, status="ERROR")),
    "api": spans_trace(span({"http.route": "/api"})),
    "api_error": spans_trace(span({"http.route": "/api"}, status="ERROR")),
    "api_debug_error": spans_trace(span({"http.route": "/api", "debug": True}, status="ERROR")),
    "api_slow": spans_trace(span({"http.route": "/api"}, start_ms=0, end_ms=2000)),
}


def run(names: str, trace: str, first_match: bool = False) -> tuple[str, str]:
    configs = [PolicyConfig.model_validate(yaml.safe_load(POLICIES[name])) for name in names.split()]
    final, each = decide(build_policies(configs, FakeClock()), TRACES[trace], first_match)
    short = {decision: abbreviation for abbreviation, decision in SHORT.items()}
    return short[final], " ".join(f"{name}={short[decision]}" for name, decision in each.items())


@pytest.mark.parametrize("names, trace, first_match, final, each", [
    # a drop decision vetoes everything, and drop policies run first wherever they stand
    ("all drop-health", "health", False, "D", "drop-health=D"),
    ("all drop-health", "api", False, "S", "drop-health=N all=S"),
    ("errors drop-debug drop-health", "api_debug_error", False, "D", "drop-debug=D"),
    ("errors drop-debug drop-health", "api_error", False, "S", "drop-debug=N drop-health=N errors=S"),
    ("all drop-health", "health", True, "D", "drop-health=D"),
    # invert_match answers plainly (otelcol 0.165): its match vetoes no other policy's Sampled,
    # and its Sampled keeps a trace another policy did not sample
    ("not-health all", "health", False, "S", "not-health=N all=S"),
    ("not-health errors", "health_error", False, "S", "not-health=N errors=S"),
    ("not-health", "api", False, "S", "not-health=S"),
    ("not-health errors", "api", False, "S", "not-health=S errors=N"),
    ("not-health errors", "api_error", False, "S", "not-health=S errors=S"),
    ("not-health errors", "health", False, "N", "not-health=N errors=N"),
    # sample_on_first_match stops at the first Sampled
    ("errors slow all", "api_error", True, "S", "errors=S"),
    ("errors slow all", "api_slow", True, "S", "errors=N slow=S"),
    ("errors slow all", "api_slow", False, "S", "errors=N slow=S all=S"),
    ("not-health errors", "api", True, "S", "not-health=S"),
    ("not-health all", "health", True, "S", "not-health=N all=S"),
    # not, and: around an inverted sub-policy
    ("not-errors", "api", False, "S", "not-errors=S"),
    ("not-errors", "api_error", False, "N", "not-errors=N"),
    ("error-and-not-health", "api_error", False, "S", "error-and-not-health=S"),
    ("error-and-not-health", "health_error", False, "N", "error-and-not-health=N"),
    # nothing sampled it
    ("errors slow", "api", False, "N", "errors=N slow=N"),
])
def test_decisions_combine_as_otelcols_make_decision(names, trace, first_match, final, each):
    assert run(names, trace, first_match) == (final, each)


def test_no_policies_keep_nothing():
    assert decide([], TRACES["api"], False) == (Decision.NOT_SAMPLED, {})


def test_policies_after_a_drop_or_a_first_match_spend_no_rate_budget():
    clock = FakeClock()
    configs = [PolicyConfig.model_validate(yaml.safe_load(text)) for text in (
        "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}",
        "{name: budget, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 2}}",
        POLICIES["drop-health"])]
    policies = build_policies(configs, clock)
    assert [policy.name for policy in policies] == ["drop-health", "errors", "budget"]
    for _ in range(5):
        assert decide(policies, TRACES["health"], False)[0] is Decision.DROPPED
        assert decide(policies, TRACES["api_error"], True)[0] is Decision.SAMPLED
    # the budget's two tokens are still there: both of these traces spend one
    assert decide(policies, TRACES["api"], True) == (
        Decision.SAMPLED, {"drop-health": Decision.NOT_SAMPLED, "errors": Decision.NOT_SAMPLED,
                           "budget": Decision.SAMPLED})
    assert decide(policies, TRACES["api"], True)[0] is Decision.SAMPLED
    assert decide(policies, TRACES["api"], True)[0] is Decision.NOT_SAMPLED


def test_policies_decide_alike_inside_decide_and_alone():
    """decide shares one flattened and serialized view of the trace between policies: it must
    change no decision, and a trace that grows between two decisions is seen whole."""
    rng = random.Random(3)
    names = "errors slow not-health drop-health drop-debug not-errors error-and-not-health"
    configs = [PolicyConfig.model_validate(yaml.safe_load(POLICIES[name])) for name in names.split()]
    configs.append(PolicyConfig.model_validate(yaml.safe_load(
        "{name: route, type: string_attribute, string_attribute: {key: http.route, values: [/api, /héllo]}}")))
    for _ in range(300):
        grown = spans_trace(*(random_span(rng) for _ in range(rng.randrange(1, 4))))
        for _ in range(2):
            together = dict(decide(build_policies(configs, FakeClock()), grown, False)[1])
            alone = {named.name: named.policy.evaluate(grown) for named in build_policies(configs, FakeClock())}
            assert together == {name: alone[name] for name in together}
            grown.batches.append(batch([random_span(rng)], resource={"service.name": rng.choice(["a", "/api"])}))
            grown.span_count += 1


def random_span(rng: random.Random):
    attrs = {key: rng.choice(values) for key, values in (("http.route", ["/api", "/health", "/héllo", "/api/x"]),
                                                         ("debug", [True, False, "true"]))
             if rng.random() < 0.6}
    return span(attrs, start_ms=0, end_ms=rng.choice([10, 2000]), status=rng.choice(["OK", "ERROR", "UNSET"]))


@pytest.mark.parametrize("first_match", [False, True])
def test_deciding_many_traces_at_once_decides_each_as_deciding_them_one_by_one(first_match):
    """decide_many runs each policy over all traces: every final and every policy's own decision
    must be what deciding the traces one by one gives, a budget (rate_limiting) spent alike."""
    rng = random.Random(5)
    budget = "{name: budget, type: rate_limiting, rate_limiting: {spans_per_second: 3}}"
    error_in_budget = """{name: error-in-budget, type: and, and: {and_sub_policy: [
                           {type: status_code, status_code: {status_codes: [ERROR]}},
                           {type: rate_limiting, rate_limiting: {spans_per_second: 2}}]}}"""
    sampled = "{name: ten, type: probabilistic, probabilistic: {sampling_percentage: 40}}"
    available = [*POLICIES.values(), budget, error_in_budget, sampled]
    for _ in range(60):
        snippets = rng.sample(available, rng.randint(1, 5))
        configs = [PolicyConfig.model_validate(yaml.safe_load(snippet)) for snippet in snippets]
        traces = [spans_trace(*(random_span(rng) for _ in range(rng.randrange(1, 4)))) for _ in range(30)]
        for trace in traces:  # hints as a split reads them: unknown, or bits (a clear bit: no match possible)
            trace.hints = rng.choice([None, 0, rng.getrandbits(4), -1])
        one_by_one = build_policies(configs, FakeClock())
        for named in one_by_one:  # each policy's own evaluate, trace by trace: not its evaluate_many
            object.__setattr__(named, "evaluate_many", lambda traces, evaluate=named.policy.evaluate: [
                evaluate(trace) for trace in traces])
        many = build_policies(configs, FakeClock())
        assert byte_hints(one_by_one)[1].keys() == byte_hints(many)[1].keys()
        finals, each = [], {}
        for trace in traces:
            final, per_policy = decide(one_by_one, trace, first_match)
            finals.append(final)
            for name, decision in per_policy.items():
                each.setdefault(name, []).append(decision)
        many_finals, many_each = decide_many(many, traces, first_match)
        assert many_finals == finals
        assert dict(many_each) == each


class Scripted:
    """A sub-policy whose decision per trace is given, and which notes the traces it judged."""

    def __init__(self, decisions: dict[bytes, Decision]):
        self.decisions = decisions
        self.judged: list[bytes] = []

    def evaluate(self, trace: Trace) -> Decision:
        self.judged.append(trace.trace_id)
        return self.decisions[trace.trace_id]


def test_and_over_many_traces_answers_and_asks_as_trace_by_trace():
    """An error or a refusal ends a trace's turn (later sub-policies never see it). Rounds of
    every size; a sub-policy may refuse all, some or none of the traces it sees."""
    from sampler.policies.and_ import all_sample, all_sample_many

    rng = random.Random(3)
    choices = list(Decision)
    for _ in range(200):
        ids = [bytes([n]) * 16 for n in range(rng.choice([0, 1, 2, 7, 64, 200]))]
        scripts = []
        for _ in range(rng.randint(1, 4)):
            among = rng.sample(choices, rng.randint(1, 3))
            scripts.append({trace_id: rng.choice(among) for trace_id in ids})
        one, many = [Scripted(script) for script in scripts], [Scripted(script) for script in scripts]
        traces = [Trace(trace_id) for trace_id in ids]
        assert all_sample_many(many, traces) == [all_sample(one, trace) for trace in traces]
        assert [policy.judged for policy in many] == [policy.judged for policy in one]
