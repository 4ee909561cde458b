#!/usr/bin/env python3
"""Tail-sampling policy evaluation: decisions per second on one core.

Method
    2,000 distinct traces of 10 spans each, built once: one resource (service.name,
    host.name, deployment.environment) and spans with 6 to 8 attributes each (http.method,
    http.route, http.status_code, url.path, net.peer.name, ...), a trace in 20 with an ERROR
    span, durations spread from 5 ms to 2 s. The policies are built from YAML as the agent
    builds them, then `decide` runs over the traces round-robin, sample_on_first_match off so
    every policy is evaluated, in --rounds rounds of --seconds / --rounds CPU seconds
    (time.process_time) each; the fastest round is reported, since a shared machine only ever
    slows a round down.

    Rows: the realistic 4-policy config (status_code ERROR, latency 500 ms, probabilistic 10 %,
    string_attribute on http.route with exact values), the same with the string_attribute as
    regular expressions, each of the four policies alone, and a boolean_attribute whose key no
    span has (the common case of a force-sample flag); a rate_limiting budget (5,000 spans a
    second: after the first burst most traces are refused) and an `and` of status_code and
    string_attribute; then ottl_condition policies that decide as status_code,
    string_attribute (exact and regex) and boolean_attribute do.

    With --round N the traces are decided N at a time (decide_many), as the tail-sampling
    stage decides a round: each policy judges the N traces in one evaluate_many.

    With --with-raw each trace also carries its request's bytes, as the stage gives them, so
    attribute policies and ottl_condition can rule a trace out by a byte search.

Usage
    python bench/sampler_policies.py [--seconds 5] [--rounds 5] [--rows TEXT] [--with-raw] [--round N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Status

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeagent.processors.actions import to_any_value  # noqa: E402
from sampler.policies import build_policies, decide, decide_many  # noqa: E402
from sampler.policies.config import PolicyConfig  # noqa: E402
from sampler.trace import Decision, Trace  # noqa: E402

ERRORS = "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}"
SLOW = "{name: slow, type: latency, latency: {threshold_ms: 500}}"
TEN_PERCENT = "{name: ten-percent, type: probabilistic, probabilistic: {sampling_percentage: 10}}"
CHECKOUT = "{name: checkout, type: string_attribute, string_attribute: {key: http.route, values: [/checkout, /cart]}}"
FORCED = "{name: forced, type: boolean_attribute, boolean_attribute: {key: app.force_sample, value: true}}"
BUDGET = "{name: budget, type: rate_limiting, rate_limiting: {spans_per_second: 5000}}"
FAILED_CHECKOUT = ("{name: failed-checkout, type: and, and: {and_sub_policy: ["
                   "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}, "
                   "{name: checkout, type: string_attribute, "
                   "string_attribute: {key: http.route, values: [/checkout]}}]}}")
CHECKOUT_REGEX = ("{name: checkout, type: string_attribute, string_attribute: {key: http.route, "
                  "values: ['^/checkout', '^/cart/.*'], enabled_regex_matching: true}}")
# ottl_condition equivalents of the rows above
OTTL_ERRORS = "{name: errors, type: ottl_condition, ottl_condition: {span: ['status.code == STATUS_CODE_ERROR']}}"
OTTL_CHECKOUT = ("{name: checkout, type: ottl_condition, ottl_condition: {span: ["
                 "'attributes[\"http.route\"] == \"/checkout\" or attributes[\"http.route\"] == \"/cart\"']}}")
OTTL_CHECKOUT_REGEX = ("{name: checkout, type: ottl_condition, ottl_condition: {span: ["
                       "'IsMatch(attributes[\"http.route\"], \"^/checkout\")', "
                       "'IsMatch(attributes[\"http.route\"], \"^/cart/.*\")']}}")
OTTL_FORCED = ("{name: forced, type: ottl_condition, ottl_condition: {span: ["
               "'attributes[\"app.force_sample\"] == true']}}")

ROWS = [
    ("4 policies (string_attribute exact)", [ERRORS, SLOW, TEN_PERCENT, CHECKOUT]),
    ("4 policies (string_attribute regex)", [ERRORS, SLOW, TEN_PERCENT, CHECKOUT_REGEX]),
    ("status_code alone", [ERRORS]),
    ("latency alone", [SLOW]),
    ("probabilistic alone", [TEN_PERCENT]),
    ("string_attribute alone", [CHECKOUT]),
    ("boolean_attribute alone (key absent)", [FORCED]),
    ("rate_limiting alone", [BUDGET]),
    ("and (status_code, string_attribute)", [FAILED_CHECKOUT]),
    ("ottl_condition status.code", [OTTL_ERRORS]),
    ("ottl_condition route ==, or", [OTTL_CHECKOUT]),
    ("ottl_condition IsMatch route (2)", [OTTL_CHECKOUT_REGEX]),
    ("ottl_condition key absent", [OTTL_FORCED]),
]

ROUTES = ["/checkout", "/cart", "/cart/items", "/products/{id}", "/search", "/health", "/login", "/orders/{id}"]
SERVICES = ["frontend", "cart", "checkout", "catalog", "auth"]


def build_trace(rng: random.Random) -> Trace:
    batch = ResourceSpans()
    for key, value in (("service.name", rng.choice(SERVICES)), ("host.name", f"node-{rng.randrange(40)}"),
                       ("deployment.environment", "production")):
        batch.resource.attributes.add(key=key).value.CopyFrom(to_any_value(value))
    spans = batch.scope_spans.add(scope={"name": "io.opentelemetry.http", "version": "1.30.0"}).spans
    start = 1_700_000_000_000_000_000 + rng.randrange(10**12)
    duration = int(rng.lognormvariate(4.5, 1.2) * 1_000_000)  # median ~90 ms
    error = rng.random() < 0.05
    route = rng.choice(ROUTES)
    for number in range(10):
        span = spans.add(trace_id=bytes(16), span_id=rng.randbytes(8), name=f"GET {route}", kind=2 if number else 1,
                         start_time_unix_nano=start + number * duration // 20,
                         end_time_unix_nano=start + duration - number * duration // 40)
        attributes = {"http.method": "GET", "http.route": route, "http.status_code": 500 if error else 200,
                      "url.path": route.replace("{id}", str(rng.randrange(1000))), "net.peer.name": "10.0.0.7",
                      "thread.id": rng.randrange(64)}
        if number % 3 == 0:
            attributes.update({"db.system": "postgresql", "db.name": "shop"})
        for key, value in attributes.items():
            span.attributes.add(key=key).value.CopyFrom(to_any_value(value))
        if error and number == 9:
            span.status.code = Status.STATUS_CODE_ERROR
    return Trace(trace_id=rng.randbytes(16), batches=[batch], span_count=10, size_bytes=batch.ByteSize())


def measure(snippets: list[str], traces: list[Trace], seconds: float, rounds: int,
            round_size: int = 1) -> tuple[float, float]:
    """(decisions per CPU second in the fastest of `rounds` rounds, fraction of traces kept);
    `round_size` traces decided at a time (decide_many), or one by one (decide) when 1."""
    policies = build_policies([PolicyConfig.model_validate(yaml.safe_load(text)) for text in snippets],
                              time.monotonic)
    best, kept, decided = 0.0, 0, 0
    for _ in range(rounds):
        count, started = 0, time.process_time()
        while time.process_time() - started < seconds / rounds:
            if round_size == 1:
                for trace in traces:
                    final, _ = decide(policies, trace, False)
                    kept += final is Decision.SAMPLED
            else:
                for start in range(0, len(traces), round_size):
                    finals, _ = decide_many(policies, traces[start:start + round_size], False)
                    kept += finals.count(Decision.SAMPLED)
            count += len(traces)
        best = max(best, count / (time.process_time() - started))
        decided += count
    return best, kept / decided


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="CPU seconds per row")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per row; the fastest is reported")
    parser.add_argument("--rows", default="", help="only the rows whose label contains this text")
    parser.add_argument("--with-raw", action="store_true",
                        help="give each trace its request bytes, as the tail-sampling stage does (Trace.raw)")
    parser.add_argument("--round", type=int, default=1,
                        help="traces decided at a time (decide_many), as the stage decides a round; 1: one by one")
    args = parser.parse_args()
    rng = random.Random(42)
    traces = [build_trace(rng) for _ in range(2_000)]
    if args.with_raw:
        for trace in traces:
            trace.raw = [ExportTraceServiceRequest(resource_spans=trace.batches).SerializeToString()]
    print(f"{'config':40} {'decisions/s':>12} {'µs/decision':>12} {'kept':>6}")
    for label, snippets in ROWS:
        if args.rows not in label:
            continue
        rate, kept = measure(snippets, traces, args.seconds, args.rounds, args.round)
        print(f"{label:40} {rate:12,.0f} {1e6 / rate:12.1f} {kept:6.1%}")


if __name__ == "__main__":
    main()
