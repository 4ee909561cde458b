"""Span compression turns runs of similar exit spans into Elastic-style composites, and nothing else.

Each row is a trace (one SERVER root, span 1, and its children) and the exact spans expected
after compression, in the order they are forwarded: span id, name, start and end (milliseconds
after BASE) and every attribute.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from sampler.compression import SpanCompressionConfig, compress_trace
from sampler.trace import Trace
from tests.processors.tables import attrs_to_python, fill

TRACE_ID = bytes(range(1, 17))
BASE = 1_700_000_000_000_000_000
MS = 1_000_000
CLIENT, SERVER, INTERNAL = Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_SERVER, Span.SPAN_KIND_INTERNAL
CONSUMER = Span.SPAN_KIND_CONSUMER
ERROR, OK = Status.STATUS_CODE_ERROR, Status.STATUS_CODE_OK
SERVICES = {0: "shop", 1: "shop", 2: "inventory"}  # the service.name of each batch

SHOP_DB = (("db.system", "postgresql"), ("db.name", "shop"))
BILLING_DB = (("db.system", "postgresql"), ("db.name", "billing"))
INVENTORY = (("http.request.method", "GET"), ("url.full", "https://inventory:8443/items/7"))


def span(span_id: int, name: str, start: float, end: float, attrs: tuple = (), parent: int = 1, kind: int = CLIENT,
         status: int = 0, batch: int = 0) -> dict[str, Any]:
    return {"id": span_id, "name": name, "start": start, "end": end, "attrs": attrs, "parent": parent, "kind": kind,
            "status": status, "batch": batch}


def composite(count: int, sum_ms: float, strategy: str) -> tuple:
    return (("span.composite.count", count), ("span.composite.sum", sum_ms),
            ("span.composite.compression_strategy", strategy))


ROOT = span(1, "GET /users", 0, 100, (("http.request.method", "GET"),), parent=0, kind=SERVER)
UNCHANGED = "unchanged"


def selects(*times: tuple[int, float, float], name: str = "SELECT users", attrs: tuple = SHOP_DB) -> list[dict]:
    return [span(span_id, name, start, end, attrs) for span_id, start, end in times]


# One query by id, three times: the statement is the span name, as some instrumentations write it.
BY_ID = [ROOT, *[span(n, f"SELECT * FROM t WHERE id={n - 1}", 2 * n + 6, 2 * n + 7,
                      SHOP_DB + ((key, f"SELECT * FROM t WHERE id={n - 1}"),))
                 for n, key in ((2, "db.statement"), (3, "db.statement"), (4, "db.query.text"))]]

ROWS = [
    ("exact_match_makes_n_plus_one_queries_one_span", {},
     [ROOT, *selects((2, 10, 12), (3, 13, 16), (4, 17, 19))],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT users", 10, 19, SHOP_DB + composite(3, 7.0, "exact_match"))]),
    ("same_kind_names_the_composite_after_the_destination", {},
     [ROOT, span(2, "SELECT users", 10, 12, SHOP_DB), span(3, "SELECT orders", 13, 16, SHOP_DB),
      span(4, "UPDATE users", 17, 19, SHOP_DB)],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "Calls to postgresql/shop", 10, 19, SHOP_DB + composite(3, 7.0, "same_kind"))]),
    ("same_kind_run_takes_exact_matches_too", {},
     [ROOT, span(2, "SELECT users", 10, 12, SHOP_DB), span(3, "SELECT orders", 13, 16, SHOP_DB),
      span(4, "SELECT users", 17, 19, SHOP_DB)],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "Calls to postgresql/shop", 10, 19, SHOP_DB + composite(3, 7.0, "same_kind"))]),
    ("the_first_two_spans_fix_the_strategy", {"min_compression_count": 2},
     [ROOT, *selects((2, 10, 11), (3, 12, 13)), *selects((4, 14, 15), (5, 16, 17), (6, 18, 19), name="SELECT orders")],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT users", 10, 13, SHOP_DB + composite(2, 2.0, "exact_match")),
      (4, "SELECT orders", 14, 19, SHOP_DB + composite(3, 3.0, "exact_match"))]),
    ("fewer_than_min_compression_count_stay_apart", {},
     [ROOT, *selects((2, 10, 12), (3, 13, 16))], UNCHANGED),
    ("an_error_span_breaks_the_run", {},
     [ROOT, *selects((2, 10, 11), (3, 12, 13)), span(4, "SELECT users", 14, 15, SHOP_DB, status=ERROR),
      *selects((5, 16, 17), (6, 18, 19), (7, 20, 21))],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT users", 10, 11, SHOP_DB), (3, "SELECT users", 12, 13, SHOP_DB),
      (4, "SELECT users", 14, 15, SHOP_DB), (5, "SELECT users", 16, 21, SHOP_DB + composite(3, 3.0, "exact_match"))]),
    ("status_ok_counts_as_success", {},
     [ROOT, *selects((2, 10, 11), (3, 12, 13)), span(4, "SELECT users", 14, 15, SHOP_DB, status=OK)],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT users", 10, 15, SHOP_DB + composite(3, 3.0, "exact_match"))]),
    ("a_span_that_propagated_its_context_breaks_the_run", {},
     [ROOT, *selects((2, 10, 11), (3, 12, 13), (4, 14, 25), (5, 26, 27), (6, 28, 29), (7, 30, 31), name="GET",
                     attrs=INVENTORY),
      span(8, "GET /items/7", 15, 24, (("http.request.method", "GET"),), parent=4, kind=SERVER, batch=2)],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "GET", 10, 11, INVENTORY), (3, "GET", 12, 13, INVENTORY), (4, "GET", 14, 25, INVENTORY),
      (5, "GET", 26, 31, INVENTORY + composite(3, 3.0, "exact_match")),
      (8, "GET /items/7", 15, 24, (("http.request.method", "GET"),))]),
    ("siblings_are_ordered_by_start_time_not_arrival", {},
     [ROOT, *selects((4, 17, 19), (2, 10, 12), (3, 13, 16))],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT users", 10, 19, SHOP_DB + composite(3, 7.0, "exact_match"))]),
    ("a_sibling_starting_between_them_keeps_spans_apart", {},
     [ROOT, *selects((2, 10, 11), (3, 12, 13), (4, 18, 19)), span(5, "render", 14, 17, kind=INTERNAL)],
     UNCHANGED),
    ("a_span_longer_than_max_span_duration_breaks_the_run", {"max_span_duration_secs": 0.005},
     [ROOT, *selects((2, 10, 12), (3, 13, 16), (4, 16, 30), (5, 30, 32), (6, 33, 35), (7, 36, 38))],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT users", 10, 12, SHOP_DB), (3, "SELECT users", 13, 16, SHOP_DB),
      (4, "SELECT users", 16, 30, SHOP_DB), (5, "SELECT users", 30, 38, SHOP_DB + composite(3, 6.0, "exact_match"))]),
    ("a_span_starting_outside_the_window_opens_a_new_run", {"compression_window_secs": 0.010},
     [ROOT, *selects((2, 10, 12), (3, 13, 15), (4, 17, 19), (5, 21, 23), (6, 24, 26), (7, 27, 29))],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT users", 10, 19, SHOP_DB + composite(3, 6.0, "exact_match")),
      (5, "SELECT users", 21, 29, SHOP_DB + composite(3, 6.0, "exact_match"))]),
    ("compress_operations_limits_compression_to_those_names", {"compress_operations": ["SELECT users"]},
     [ROOT, *selects((2, 10, 11), (3, 12, 13), (4, 14, 15), name="GET", attrs=INVENTORY),
      *selects((5, 16, 17), (6, 18, 19), (7, 20, 21))],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "GET", 10, 11, INVENTORY), (3, "GET", 12, 13, INVENTORY), (4, "GET", 14, 15, INVENTORY),
      (5, "SELECT users", 16, 21, SHOP_DB + composite(3, 3.0, "exact_match"))]),
    ("exclude_operations_are_never_compressed", {"exclude_operations": ["SELECT users"]},
     [ROOT, *selects((2, 10, 11), (3, 12, 13), (4, 14, 15), name="GET", attrs=INVENTORY),
      *selects((5, 16, 17), (6, 18, 19), (7, 20, 21))],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "GET", 10, 15, INVENTORY + composite(3, 3.0, "exact_match")),
      (5, "SELECT users", 16, 17, SHOP_DB), (6, "SELECT users", 18, 19, SHOP_DB),
      (7, "SELECT users", 20, 21, SHOP_DB)]),
    ("statements_matching_one_sql_pattern_are_an_exact_match", {"sql_patterns": [r"^SELECT \* FROM t WHERE id=\d+$"]},
     BY_ID,
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT * FROM t WHERE id=1", 10, 15,
       SHOP_DB + (("db.statement", "SELECT * FROM t WHERE id=1"),) + composite(3, 3.0, "exact_match"))]),
    ("without_sql_patterns_differing_statements_are_only_same_kind", {},
     BY_ID,
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "Calls to postgresql/shop", 10, 15,
       SHOP_DB + (("db.statement", "SELECT * FROM t WHERE id=1"),) + composite(3, 3.0, "same_kind"))]),
    ("children_of_different_parents_are_not_siblings", {},
     [ROOT, span(9, "load", 5, 50, kind=INTERNAL),
      *[span(2 * n + 10, "SELECT users", 10 + 2 * n, 11 + 2 * n, SHOP_DB, parent=(1, 9)[n % 2]) for n in range(4)]],
     UNCHANGED),
    ("each_parent_compresses_its_own_children", {"min_compression_count": 2},
     [ROOT, span(9, "load", 5, 50, kind=INTERNAL),
      *[span(2 * n + 10, "SELECT users", 10 + 2 * n, 11 + 2 * n, SHOP_DB, parent=(1, 9)[n % 2]) for n in range(4)]],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)), (9, "load", 5, 50, ()),
      (10, "SELECT users", 10, 15, SHOP_DB + composite(2, 2.0, "exact_match")),
      (12, "SELECT users", 12, 17, SHOP_DB + composite(2, 2.0, "exact_match"))]),
    ("different_destinations_do_not_merge", {},
     [ROOT, span(2, "SELECT users", 10, 11, SHOP_DB), span(3, "SELECT users", 12, 13, BILLING_DB),
      span(4, "SELECT users", 14, 15, SHOP_DB)], UNCHANGED),
    ("peer_service_names_the_destination", {},
     [ROOT, *[span(n, name, n * 2, n * 2 + 1, (("peer.service", "users-db"),) + SHOP_DB)
              for n, name in ((2, "SELECT users"), (3, "SELECT orders"), (4, "DELETE carts"))]],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "Calls to users-db", 4, 9, (("peer.service", "users-db"),) + SHOP_DB + composite(3, 3.0, "same_kind"))]),
    ("http_destination_is_the_url_host_and_port", {},
     [ROOT, span(2, "GET", 10, 11, INVENTORY), span(3, "POST", 12, 13, INVENTORY), span(4, "GET", 14, 15, INVENTORY)],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "Calls to inventory:8443", 10, 15, INVENTORY + composite(3, 3.0, "same_kind"))]),
    ("client_spans_without_destination_compress_only_when_exact", {},
     [ROOT, span(2, "call", 10, 11), span(3, "call", 12, 13), span(4, "call", 14, 15),
      span(5, "ping", 16, 17), span(6, "pong", 18, 19), span(7, "ping", 20, 21)],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "call", 10, 15, composite(3, 3.0, "exact_match")), (5, "ping", 16, 17, ()), (6, "pong", 18, 19, ()),
      (7, "ping", 20, 21, ())]),
    ("internal_spans_with_a_database_are_exit_spans", {},
     [ROOT, *[span(n, "SELECT users", n * 2, n * 2 + 1, SHOP_DB, kind=INTERNAL) for n in (2, 3, 4)]],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT users", 4, 9, SHOP_DB + composite(3, 3.0, "exact_match"))]),
    ("consumer_spans_are_entries_not_exits", {},
     [ROOT, *[span(n, "orders process", n * 2, n * 2 + 1, (("messaging.system", "kafka"),), kind=CONSUMER)
              for n in (2, 3, 4)]], UNCHANGED),
    ("spans_of_one_service_in_two_batches_merge", {},
     [ROOT, *selects((2, 10, 11), (3, 12, 13)), span(4, "SELECT users", 14, 15, SHOP_DB, batch=1)],
     [(1, "GET /users", 0, 100, (("http.request.method", "GET"),)),
      (2, "SELECT users", 10, 15, SHOP_DB + composite(3, 3.0, "exact_match"))]),
    ("spans_of_different_services_do_not_merge", {},
     [ROOT, *selects((2, 10, 11), (3, 12, 13)), span(4, "SELECT users", 14, 15, SHOP_DB, batch=2)], UNCHANGED),
    ("disabled_changes_nothing", {"enabled": False},
     [ROOT, *selects((2, 10, 12), (3, 13, 16), (4, 17, 19))], UNCHANGED),
]


def build(specs: list[dict]) -> Trace:
    trace = Trace(trace_id=TRACE_ID)
    batches: dict[int, ResourceSpans] = {}
    for spec in specs:
        if spec["batch"] not in batches:
            batch = batches[spec["batch"]] = ResourceSpans()
            fill(batch.resource.attributes, [("service.name", SERVICES[spec["batch"]])])
            batch.scope_spans.add().scope.name = "instrumentation"
        out = batches[spec["batch"]].scope_spans[0].spans.add(
            trace_id=TRACE_ID, span_id=spec["id"].to_bytes(8, "big"), name=spec["name"], kind=spec["kind"],
            parent_span_id=spec["parent"].to_bytes(8, "big") if spec["parent"] else b"",
            start_time_unix_nano=BASE + round(spec["start"] * MS), end_time_unix_nano=BASE + round(spec["end"] * MS))
        out.status.code = spec["status"]
        fill(out.attributes, list(spec["attrs"]))
    trace.batches = [batches[number] for number in sorted(batches)]
    trace.span_count = len(specs)
    return trace


def forwarded(trace: Trace) -> list[tuple]:
    return [(int.from_bytes(s.span_id, "big"), s.name, (s.start_time_unix_nano - BASE) / MS,
             (s.end_time_unix_nano - BASE) / MS, tuple(attrs_to_python(s.attributes))) for _, _, s in trace.spans()]


def config_of(overrides: dict) -> SpanCompressionConfig:
    return SpanCompressionConfig.model_validate({"enabled": True, **overrides})


@pytest.mark.parametrize("overrides,given,expected", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_compression(overrides, given, expected):
    trace = build(given)
    before = [batch.SerializeToString() for batch in trace.batches]
    removed = compress_trace(trace, config_of(overrides))
    if expected == UNCHANGED:
        assert removed == 0
        assert [batch.SerializeToString() for batch in trace.batches] == before
    else:
        assert forwarded(trace) == expected
        assert removed == len(given) - len(expected)
    assert trace.span_count == sum(1 for _ in trace.spans()) == len(given) - removed


def test_sql_patterns_are_read_as_go_reads_them():
    # POSIX classes and \\z are Go syntax; in Python's re the first is a set of ":digt" and the second an error
    go = r"^SELECT \* FROM t WHERE id=[[:digit:]]+\z"
    trace = build(BY_ID)
    assert compress_trace(trace, config_of({"sql_patterns": [go]})) == 2
    assert forwarded(trace)[1][4][-1] == ("span.composite.compression_strategy", "exact_match")
    # Go's $ is the end of the text: a statement ending in a newline does not match (Python's $ matches before it)
    trace = build([{**spec, "attrs": tuple((key, f"{value}\n" if key == "db.statement" else value)
                                           for key, value in spec["attrs"])} for spec in BY_ID])
    compress_trace(trace, config_of({"sql_patterns": [r"^SELECT \* FROM t WHERE id=\d+$"]}))
    assert forwarded(trace)[1][4][-1] == ("span.composite.compression_strategy", "same_kind")


def test_a_statement_that_makes_a_pattern_backtrack_for_ever_in_re_is_matched_in_linear_time():
    """Python's re takes time exponential in the statement's length here, holding the GIL and the
    event loop: in a process of its own, so that a regression fails the test instead of hanging the suite."""
    script = ("import time\n"
              "from tests.sampler.test_compression import SHOP_DB, build, compress_trace, config_of, selects\n"
              "statement = SHOP_DB + (('db.statement', 'a' * 5000 + '!'),)\n"
              "trace = build(selects((2, 10, 11), (3, 12, 13), (4, 14, 15), attrs=statement))\n"
              "started = time.perf_counter()\n"
              "removed = compress_trace(trace, config_of({'sql_patterns': [r'^(\\w+\\s?)*$']}))\n"
              "print(removed, time.perf_counter() - started)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=True)
    removed, seconds = done.stdout.split()
    assert removed == "2"  # no pattern matches: the three spans have the same name, an exact match
    assert float(seconds) < 1


def test_batches_left_empty_are_dropped():
    trace = build([ROOT, *selects((2, 10, 11), (3, 12, 13)), span(4, "SELECT users", 14, 15, SHOP_DB, batch=1)])
    assert len(trace.batches) == 2
    assert compress_trace(trace, config_of({})) == 2
    assert len(trace.batches) == 1


def test_compressing_a_compressed_trace_again_changes_nothing():
    trace = build([ROOT, *selects((2, 10, 11), (3, 12, 13), (4, 14, 15), (5, 16, 17))])
    config = config_of({"min_compression_count": 2})
    assert compress_trace(trace, config) == 3
    once = [batch.SerializeToString() for batch in trace.batches]
    assert compress_trace(trace, config) == 0
    assert [batch.SerializeToString() for batch in trace.batches] == once


@pytest.mark.e2e  # seconds: 100,000 spans
def test_a_large_trace_is_compressed_without_quadratic_work():
    # 2,000 parents with 50 interleaved queries each: 100,000 removals scattered through one ScopeSpans.
    parents, children = 2_000, 50
    specs = [ROOT] + [span(10 + p, "handler", 1, 90, kind=INTERNAL) for p in range(parents)]
    specs += [span(100_000 + c * parents + p, "SELECT users", 2 + c * 0.01, 2.005 + c * 0.01, SHOP_DB, parent=10 + p)
              for c in range(children) for p in range(parents)]
    trace = build(specs)
    started = time.perf_counter()
    removed = compress_trace(trace, config_of({}))
    elapsed = time.perf_counter() - started
    assert removed == parents * (children - 1)
    assert trace.span_count == 1 + 2 * parents
    assert elapsed < 30, f"{len(specs)} spans took {elapsed:.1f}s"
