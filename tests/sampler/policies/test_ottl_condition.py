"""`ottl_condition` decides as otelcol's: any span condition on any span, or any spanevent
condition on any event, samples the trace; with error_mode propagate a failing condition is an
error that `and`, `not`, `drop` and `composite` pass up and `decide` skips. `not` works inside
`and` and `drop`, as otelcol allows."""

from __future__ import annotations

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.policies import build_policies, decide
from sampler.trace import Decision
from tests.sampler.policies.traces import FakeClock, decisions, policy_config, span, spans_trace


def _event_span(event_name: str) -> Span:
    out = span(name="work")
    out.events.add(name=event_name)
    return out


TRACES = {
    "server_error": spans_trace(span(name="GET /a", attrs={"http.status_code": 503}, status="ERROR")),
    "ok": spans_trace(span(name="GET /b", attrs={"http.status_code": 200}), span(name="db")),
    "exception": spans_trace(span(name="POST /c"), _event_span("exception")),
    "checkout": spans_trace(span(name="POST /d"), resource={"service.name": "checkout"}),
    "text_status": spans_trace(span(name="GET /e", attrs={"http.status_code": "oops"})),
}

OTTL = """
name: p
type: ottl_condition
ottl_condition:
  error_mode: {mode}
  span: {span}
  spanevent: {events}
"""


def ottl(span_conditions: list[str], events: list[str] | None = None, mode: str = "ignore") -> str:
    return OTTL.format(mode=mode, span=span_conditions, events=events or [])


@pytest.mark.parametrize(("spans", "events", "sampled"), [
    (['attributes["http.status_code"] >= 500'], [], {"server_error"}),
    (["status.code == STATUS_CODE_ERROR"], [], {"server_error"}),
    (['IsMatch(name, "^POST ")'], [], {"exception", "checkout"}),
    (['resource.attributes["service.name"] == "checkout"'], [], {"checkout"}),
    ([], ['name == "exception"'], {"exception"}),
    (['name == "db"'], ['name == "exception"'], {"ok", "exception"}),
    (['attributes["http.status_code"] == "oops"', 'kind == SPAN_KIND_CLIENT'], [], {"text_status"}),
])
def test_a_match_on_any_span_or_event_samples_the_trace(spans, events, sampled):
    got = decisions(ottl(spans, events), TRACES)
    assert {name for name, decision in got.items() if decision == "S"} == sampled
    assert set(got.values()) <= {"S", "N"}


def test_a_failing_condition_is_an_error_only_with_propagate():
    failing = ['Int(attributes["http.status_code"]) > 500']  # "oops" is no number
    assert decisions(ottl(failing, mode="propagate"), TRACES)["text_status"] == "E"
    assert decisions(ottl(failing, mode="ignore"), TRACES)["text_status"] == "N"
    assert decisions(ottl(failing, mode="silent"), TRACES)["server_error"] == "S"


def _sub(conditions: list[str]) -> dict:
    return {"name": "o", "type": "ottl_condition",
            "ottl_condition": {"error_mode": "propagate", "span": conditions}}


FAILS = _sub(['Int(attributes["http.status_code"]) > 0'])
ERRORS = {"name": "e", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


@pytest.mark.parametrize("policy", [
    {"type": "and", "and": {"and_sub_policy": [ERRORS | {"status_code": {"status_codes": ["UNSET"]}}, FAILS]}},
    {"type": "not", "not": {"not_sub_policy": FAILS}},
    {"type": "drop", "drop": {"drop_sub_policy": [FAILS]}},
    {"type": "composite", "composite": {"max_total_spans_per_second": 100,
                                        "composite_sub_policy": [FAILS | {"name": "a"}]}},
])
def test_an_error_passes_up_through_composed_policies(policy):
    built = build_policies([policy_config(str({"name": "p", **policy}))], FakeClock())
    assert built[0].policy.evaluate(TRACES["text_status"]) is Decision.ERROR


def test_decide_skips_an_erroring_policy():
    policies = build_policies([policy_config(str({"name": "fails", **FAILS})),
                               policy_config("{name: all, type: always_sample}")], FakeClock())
    final, each = decide(policies, TRACES["text_status"])
    assert final is Decision.SAMPLED and each == {"o": Decision.ERROR, "all": Decision.SAMPLED}
    final, each = decide(policies[:1], TRACES["text_status"])
    assert final is Decision.NOT_SAMPLED and each == {"o": Decision.ERROR}


NOT_IN_AND = """
name: p
type: and
and:
  and_sub_policy:
    - {name: slow-or-any, type: span_count, span_count: {min_spans: 1}}
    - name: not-errors
      type: not
      not: {not_sub_policy: {name: e, type: status_code, status_code: {status_codes: [ERROR]}}}
"""


def test_not_inside_and_negates_its_sub_policy():
    got = decisions(NOT_IN_AND, TRACES)
    assert got == {"server_error": "N", "ok": "S", "exception": "S", "checkout": "S", "text_status": "S"}


def test_not_inside_drop_drops_what_its_sub_policy_refuses():
    snippet = NOT_IN_AND.replace("type: and\nand:\n  and_sub_policy:", "type: drop\ndrop:\n  drop_sub_policy:")
    assert decisions(snippet, TRACES)["ok"] == "D"
    assert decisions(snippet, TRACES)["server_error"] == "N"


@pytest.mark.parametrize("conditions", [
    ['attributes["http.status_code"] >= 500'],
    ['attributes["missing"] == "x"'],
    ['attributes["missing"] == "x" and Int(name) == 1'],
    ['Int(name) == 1 and attributes["missing"] == "x"'],  # fails on every span: the key is not needed
    ['attributes["http.status_code"] == "oops" or IsMatch(attributes["missing"], "x")'],
])
@pytest.mark.parametrize("mode", ["propagate", "ignore"])
def test_skipping_batches_without_the_needed_keys_changes_no_decision(conditions, mode):
    plain = decisions(ottl(conditions, mode=mode), TRACES)
    with_raw = {}
    for name, item in TRACES.items():
        item.raw = [batch.SerializeToString() for batch in item.batches]
        with_raw[name] = decisions(ottl(conditions, mode=mode), {name: item})[name]
        item.raw = []
    assert with_raw == plain
    if conditions[0].startswith("Int(name)") and mode == "propagate":
        assert set(plain.values()) == {"E"}
