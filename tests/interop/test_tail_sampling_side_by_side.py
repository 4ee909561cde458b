"""Tail sampling, otelcol 0.165 and edgeagent side by side: the same traces, the same policies, the
same kept traces.

Both get one OTLP/HTTP request holding every generated trace, and run one pipeline per policy
case (`tail_sampling/<case>` into an exporter toward a sink of its own). After the decision wait,
each case's sinks must hold the same trace ids, each trace whole. Cases are chosen where the
decision depends on the traces only: rate and byte limits get budgets no trace reaches (their
timing-dependent part is tested in tests/sampler against a controlled clock).
"""

from __future__ import annotations

import http.client
import itertools
import random
import time

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel.wire import length_delimited
from tests.helpers.net import free_port
from tests.helpers.upstream import Upstream

pytestmark = pytest.mark.e2e

TRACES = 240
STRING = {"key": "customer", "values": ["vip", "gold"]}


def _ottl(span: list[str], spanevent: list[str] | None = None, mode: str | None = "ignore", name: str = "") -> dict:
    block: dict = {"error_mode": mode, "span": span} if mode else {"span": span}
    if spanevent:
        block["spanevent"] = spanevent
    return {**({"name": name} if name else {}), "type": "ottl_condition", "ottl_condition": block}


CASES: dict[str, list[dict]] = {
    "always": [{"type": "always_sample"}],
    "latency": [{"type": "latency", "latency": {"threshold_ms": 100}}],
    "latency_band": [{"type": "latency", "latency": {"threshold_ms": 100, "upper_threshold_ms": 400}}],
    "numeric": [{"type": "numeric_attribute", "numeric_attribute": {"key": "http.status", "min_value": 500,
                                                                     "max_value": 599}}],
    "numeric_inverted": [{"type": "numeric_attribute", "numeric_attribute": {
        "key": "http.status", "min_value": 400, "max_value": 499, "invert_match": True}}],
    "probabilistic": [{"type": "probabilistic", "probabilistic": {"sampling_percentage": 25}}],
    "probabilistic_salted": [{"type": "probabilistic", "probabilistic": {"sampling_percentage": 40,
                                                                         "hash_salt": "edge"}}],
    "status_error": [{"type": "status_code", "status_code": {"status_codes": ["ERROR"]}}],
    "status_error_unset": [{"type": "status_code", "status_code": {"status_codes": ["ERROR", "UNSET"]}}],
    "string": [{"type": "string_attribute", "string_attribute": STRING}],
    "string_regex": [{"type": "string_attribute", "string_attribute": {
        "key": "customer", "values": ["^g.*d$"], "enabled_regex_matching": True}}],
    "string_inverted": [{"type": "string_attribute", "string_attribute": {**STRING, "invert_match": True}}],
    # otelcol 0.165's invert_match answers plainly: a match neither vetoes another policy's
    # Sampled nor is its absence vetoed by another's NotSampled, and `not` turns it round
    "string_inverted_beside_errors": [
        {"type": "string_attribute", "string_attribute": {**STRING, "invert_match": True}},
        {"type": "status_code", "status_code": {"status_codes": ["ERROR"]}}],
    "not_inverted": [{"type": "not", "not": {"not_sub_policy": {
        "name": "not-vip", "type": "string_attribute", "string_attribute": {**STRING, "invert_match": True}}}}],
    "span_count": [{"type": "span_count", "span_count": {"min_spans": 3, "max_spans": 4}}],
    "trace_state": [{"type": "trace_state", "trace_state": {"key": "vendor", "values": ["on"]}}],
    "boolean": [{"type": "boolean_attribute", "boolean_attribute": {"key": "flagged", "value": True}}],
    "trace_flags": [{"type": "trace_flags"}],
    "not": [{"type": "not", "not": {"not_sub_policy": {
        "name": "vip", "type": "string_attribute", "string_attribute": STRING}}}],
    "and": [{"type": "and", "and": {"and_sub_policy": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "long", "type": "span_count", "span_count": {"min_spans": 2}}]}}],
    "drop": [{"type": "always_sample"},
             {"type": "drop", "drop": {"drop_sub_policy": [
                 {"name": "vip", "type": "string_attribute", "string_attribute": STRING}]}}],
    "any_of_two": [{"type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                   {"type": "latency", "latency": {"threshold_ms": 300}}],
    "rate_limiting": [{"type": "rate_limiting", "rate_limiting": {"spans_per_second": 1_000_000}}],
    "bytes_limiting": [{"type": "bytes_limiting", "bytes_limiting": {"bytes_per_second": 100_000_000}}],
    "composite": [{"type": "composite", "composite": {
        "max_total_spans_per_second": 1_000_000, "policy_order": ["errors", "vip"],
        "composite_sub_policy": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "vip", "type": "string_attribute", "string_attribute": STRING}],
        "rate_allocation": [{"policy": "errors", "percent": 50}, {"policy": "vip", "percent": 50}]}}],
}
# ottl_condition and not inside and: a second agent, as one holds a bounded number of pipelines' queues
OTTL_CASES: dict[str, list[dict]] = {
    "ottl_numeric": [_ottl(['attributes["http.status"] >= 500'])],
    "ottl_status_enum": [_ottl(["status.code == STATUS_CODE_ERROR and kind == SPAN_KIND_SERVER"])],
    "ottl_is_match": [_ottl(['IsMatch(name, "-span-[34]$")', 'IsMatch(attributes["http.status"], "^4")'])],
    "ottl_spanevent": [_ottl([], ['name == "exception"'])],
    "ottl_span_or_event": [_ottl(['span.attributes["customer"] == "vip"'],
                                 ['spanevent.name == "retry" and span.name != "nothing"'])],
    "ottl_resource": [_ottl(['resource.attributes["service.name"] == "checkout"'])],
    # comparing different types is false (true for !=), never an error, even with propagate
    "ottl_type_mismatch": [_ottl(['attributes["http.status"] == "500"', 'attributes["customer"] > 3',
                                  'attributes["flagged"] == 1', 'attributes["missing"] != nil',
                                  'attributes["flagged"] != nil and attributes["flagged"] != 1 and '
                                  'attributes["flagged"] == true'], mode="propagate")],
    "ottl_nil_and_converters": [_ottl(['attributes["customer"] != nil and Len(attributes["customer"]) == 4',
                                       'Int(attributes["flagged"]) == 1 and IsBool(attributes["flagged"])'])],
    "ottl_arithmetic": [_ottl(["(end_time_unix_nano - start_time_unix_nano) / 1000000 >= 300"])],
    "ottl_ids_and_text": [_ottl(['IsMatch(trace_id.string, "^[0-3]") and parent_span_id.string == "0000000000000000"',
                                 'kind.string == "Server" and IsMatch(name, "span-\\\\d$") and HasSuffix(name, "-2")',
                                 'Concat([attributes["customer"], String(attributes["http.status"])], "/") '
                                 '== "gold/404"',
                                 'ToUpperCase(attributes["customer"]) == "GUILD" and IsRootSpan()'])],
    "ottl_floats_and_maps_as_text": [_ottl(['IsMatch(attributes["ratio"], "^1e-07$")',
                                            'String(attributes["ratio"]) == "2"',
                                            'Len(String(attributes["meta"])) == 27 and '
                                            'IsMatch(attributes["meta"], "u003c") and '
                                            'IsMatch(attributes["meta"], "^\\\\{\\"a\\":")',  # keys sorted
                                            'String(attributes["meta"]) == "{\\"k\\":[0.5,2]}" and '
                                            'String(attributes["ratio"]) == "1e+21"'])],
    "ottl_error_propagates_through_not": [{"type": "not", "not": {"not_sub_policy": _ottl(
        ['Int(attributes["customer"]) == 0'], mode="propagate", name="number")}}],
    "ottl_error_ignored_under_not": [{"type": "not", "not": {"not_sub_policy": _ottl(
        ['Int(attributes["customer"]) == 0'], mode="ignore", name="number")}}],
    "ottl_error_mode_unset_under_not": [{"type": "not", "not": {"not_sub_policy": _ottl(
        ['Int(attributes["customer"]) == 0'], mode=None, name="number")}}],
    "not_inside_and": [{"type": "and", "and": {"and_sub_policy": [
        _ottl(["kind == SPAN_KIND_SERVER"], name="server"),
        {"name": "not-vip", "type": "not", "not": {"not_sub_policy": {
            "name": "vip", "type": "string_attribute", "string_attribute": STRING}}}]}}],
}


def _named(policies: list[dict]) -> list[dict]:
    return [{"name": f"p{index}", **policy} for index, policy in enumerate(policies)]


def traces_request(seed: int = 11) -> bytes:
    """TRACES traces of 1 to 5 spans with every property a case above reads, on its boundaries too;
    every third trace comes from another service (a resource of its own)."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    services = []
    for service in ("side-by-side", "checkout"):
        resource_spans = request.resource_spans.add()
        attribute = resource_spans.resource.attributes.add()
        attribute.key, attribute.value.string_value = "service.name", service
        services.append(resource_spans.scope_spans.add().spans)
    start = time.time_ns() - 10 * 10**9
    for number in range(TRACES):
        spans = services[number % 3 == 0]
        trace_id = rng.randbytes(16)
        duration_ms = rng.choice([5, 99, 100, 101, 250, 300, 301, 399, 400, 401, 900])
        error = rng.random() < 0.15
        customer = rng.choice(["vip", "gold", "regular", "guild", "good"])
        status = rng.choice([200, 404, 499, 500, 503, 599, 600])
        flagged = rng.random() < 0.3
        state = rng.choice(["vendor=on", "vendor=off", "", "other=on,vendor=on"])
        sampled_flag = rng.random() < 0.3
        parent = b""
        for index in range(rng.randint(1, 5)):
            span = spans.add(name=f"trace-{number}-span-{index}", trace_id=trace_id, span_id=rng.randbytes(8),
                             parent_span_id=parent, trace_state=state,
                             flags=0x101 if sampled_flag and index == 0 else 0x100)
            parent = parent or span.span_id
            span.start_time_unix_nano = start + index * 1000
            span.end_time_unix_nano = start + duration_ms * 10**6 if index == 0 else start + index * 2000
            if index == rng.randint(0, 4):  # the attributes sit on one span of the trace, not always the root
                for key, value in (("customer", customer), ("http.status", status), ("flagged", flagged)):
                    kv = span.attributes.add(key=key)
                    if isinstance(value, bool):
                        kv.value.bool_value = value
                    elif isinstance(value, int):
                        kv.value.int_value = value
                    else:
                        kv.value.string_value = value
            if error and index == 0:
                span.status.code = Status.STATUS_CODE_ERROR
            if index == 0 and rng.random() < 0.5:
                span.kind = Span.SPAN_KIND_SERVER
            if rng.random() < 0.2:  # values OTTL turns into text as Go's JSON writes them
                span.attributes.add(key="ratio").value.double_value = rng.choice([0.5, 1e-7, 2.0, 1e21])
                meta = span.attributes.add(key="meta").value
                if rng.random() < 0.5:
                    for key, text in (("z", None), ("a", "<x>")):
                        item = meta.kvlist_value.values.add(key=key)
                        if text is None:
                            item.value.int_value = 1
                        else:
                            item.value.string_value = text
                else:
                    inner = meta.kvlist_value.values.add(key="k").value.array_value.values
                    inner.add().double_value, inner.add().double_value = 0.5, 2.0
            if rng.random() < 0.1:
                span.events.add(name=rng.choice(["exception", "retry"]), time_unix_nano=span.start_time_unix_nano)
    return request.SerializeToString()


def _post(port: int, body: bytes) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
    finally:
        connection.close()


def _config(cases: dict[str, list[dict]], exporter_type: str, receiver: dict, sinks: dict[str, Upstream],
            extra: dict, wait: int = 1, settings: dict[str, dict] | None = None) -> dict:
    processors = {f"tail_sampling/{case}": {"decision_wait": f"{wait}s", "policies": _named(policies),
                                            **(settings or {}).get(case, {})}
                  for case, policies in cases.items()}
    exporters = {f"{exporter_type}/{case}": {"endpoint": sinks[case].url, **extra} for case in cases}
    pipelines = {f"traces/{case}": {"receivers": ["otlp"], "processors": [f"tail_sampling/{case}"],
                                    "exporters": [f"{exporter_type}/{case}"]} for case in cases}
    return {"receivers": {"otlp": {"protocols": {"http": receiver}}}, "processors": processors,
            "exporters": exporters, "service": {"pipelines": pipelines}}


def _kept(sink: Upstream) -> dict[bytes, int]:
    kept: dict[bytes, int] = {}
    for span in sink.spans():
        kept[span.trace_id] = kept.get(span.trace_id, 0) + 1
    return kept


def _settled(sinks: list[Upstream], quiet: float = 1.5, limit: float = 30.0) -> None:
    """Wait until no sink received anything for `quiet` seconds (bounded by `limit`)."""
    deadline = time.monotonic() + limit
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        counts = [len(sink.spans()) for sink in sinks]
        if counts != last:
            last, since = counts, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def _side_by_side(agents, otelcol, tmp_path, cases: dict[str, list[dict]], bodies: list[bytes],
                  wait: int = 1, settings: dict[str, dict] | None = None
                  ) -> dict[str, tuple[dict[bytes, int], dict[bytes, int]]]:
    """Per case, the traces edgeagent and otelcol kept of the requests `bodies` (trace id: spans),
    decided `wait` seconds after their first spans: longer than sending them all takes.
    `settings`: more of a case's tail_sampling settings than its policies."""
    ours = {case: Upstream(free_port()).start() for case in cases}
    theirs = {case: Upstream(free_port()).start() for case in cases}
    try:
        config = _config(cases, "otlphttp", {}, ours, {"compression": "none"}, wait, settings)
        config["extensions"] = {"health_check": {}}
        config["service"]["extensions"] = ["health_check"]
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        agent = agents(["run", "--config", str(path), "--state-dir", str(tmp_path / "state")])
        otel_port = free_port()
        otelcol(_config(cases, "otlp_http", {"endpoint": f"127.0.0.1:{otel_port}"}, theirs, {"compression": "none"},
                        wait, settings))

        started = time.monotonic()
        for body in bodies:
            _post(agent.http_port, body)
            _post(otel_port, body)
        time.sleep(max(0.0, started + wait - time.monotonic()))  # the decision wait, from the first spans
        _settled([*ours.values(), *theirs.values()])
        return {case: (_kept(ours[case]), _kept(theirs[case])) for case in cases}
    finally:
        for sink in [*ours.values(), *theirs.values()]:
            sink.stop()


@pytest.mark.parametrize("cases", [CASES, OTTL_CASES], ids=["policies", "ottl"])
def test_edgeagent_keeps_the_traces_otelcol_keeps_for_every_policy(agents, otelcol, tmp_path, cases):
    kept_by_case = _side_by_side(agents, otelcol, tmp_path, cases, [traces_request()])
    differences = {}
    for case, (mine, reference) in kept_by_case.items():
        if mine != reference:
            differences[case] = {"only edgeagent": len(set(mine) - set(reference)),
                                 "only otelcol": len(set(reference) - set(mine)),
                                 "both": len(set(mine) & set(reference))}
    assert not differences, differences
    kept = {case: len(mine) for case, (mine, _) in kept_by_case.items()}
    if cases is CASES:
        assert kept["always"] == TRACES and 0 < kept["probabilistic"] < TRACES
    else:  # each case tells traces apart, but where a failed condition is no match and `not` keeps all
        for case in ("ottl_error_ignored_under_not", "ottl_error_mode_unset_under_not"):
            assert kept.pop(case) == TRACES
        assert all(0 < count < TRACES for count in kept.values()), kept


_NOW = 1_700_000_000 * 10**9
# spans (start, end) in nanoseconds of traces whose duration wraps round 64 bits, and two that do not
WRAPPING = {b"\x01" * 16: [(_NOW, 2**64 - 1)], b"\x02" * 16: [(_NOW, 2**64 - 1), (_NOW, _NOW + 2 * 10**9)],
            b"\x03" * 16: [(2**64 - 10**9, 10**9)], b"\x04" * 16: [(1, 2**63 + 2 * 10**9)],
            b"\x05" * 16: [(_NOW, _NOW + 2 * 10**9)], b"\x06" * 16: [(_NOW, _NOW + 10**8)]}
# a value that begins as it ends: "ab", the bytes that open the next span and its attribute, "ab"
OVERLAPPING_SIZE = 15
EDGE_CASES: dict[str, list[dict]] = {
    "latency_wrapping": [{"type": "latency", "latency": {"threshold_ms": 1000}}],
    "latency_band_wrapping": [{"type": "latency", "latency": {"threshold_ms": 1000,
                                                              "upper_threshold_ms": 9223372036854}}],
}


def edges_request() -> tuple[bytes, str]:
    """One request of the WRAPPING traces, and of two spans in one scope, the first ending in
    "ab", the second holding the overlapping value (written attribute first: protobuf takes its
    fields in any order); and that value."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for trace_id, times in WRAPPING.items():
        for start, end in times:
            spans.add(trace_id=trace_id, span_id=bytes(range(1, 9)), name="op", start_time_unix_nano=start,
                      end_time_unix_nano=end)
    rest = Span(trace_id=b"\x08" * 16, span_id=b"\x08" * 8, name="late").SerializeToString()
    size = OVERLAPPING_SIZE
    head = bytes((0x12, size + 9 + len(rest), 0x4A, size + 7, 0x0A, 1, ord("k"), 0x12, size + 2, 0x0A, size))
    value = (b"ab" + head + b"ab").decode()
    late = Span()
    late.attributes.add(key="k").value.string_value = value
    early = Span(trace_id=b"\x07" * 16, span_id=b"\x07" * 8, name="early")
    early.attributes.add(key="note").value.string_value = "xxab"  # its last bytes
    scope = (length_delimited(2, early.SerializeToString())
             + length_delimited(2, late.SerializeToString() + rest))
    return request.SerializeToString() + length_delimited(1, length_delimited(2, scope)), value


def test_edgeagent_keeps_the_traces_otelcol_keeps_at_the_edges_of_the_wire(agents, otelcol, tmp_path):
    """Times past 2262, whose difference wraps round in otelcol's int64, and an attribute value a
    byte search could find overlapping its own end in the span before: both decide alike."""
    body, value = edges_request()
    cases = {**EDGE_CASES, "string_overlapping_itself": [
        {"type": "string_attribute", "string_attribute": {"key": "k", "values": [value]}}]}
    kept = {case: (set(mine), set(reference))
            for case, (mine, reference) in _side_by_side(agents, otelcol, tmp_path, cases, [body]).items()}
    assert kept == {
        "latency_wrapping": ({b"\x03" * 16, b"\x05" * 16},) * 2,
        "latency_band_wrapping": ({b"\x03" * 16, b"\x05" * 16},) * 2,
        "string_overlapping_itself": ({b"\x08" * 16},) * 2,
    }


def test_edgeagent_keeps_the_traces_otelcol_keeps_of_requests_in_unusual_protobuf(agents, otelcol, tmp_path):
    """Requests written in forms parsers take but SDKs do not write (tests/sampler/policies:
    test_hint_exactness), a trace's spans over several of them: otelcol's parse and edgeagent's
    byte searches and confirmations agree on every attribute and status policy."""
    from tests.sampler.policies.test_hint_exactness import POLICIES, _request

    rng = random.Random(5)
    trace_ids = [rng.randbytes(16) for _ in range(300)]  # of about three spans each
    # small requests: a search that finds more than 64 places in one tells nothing (it gives up)
    bodies = [_request(rng, rng.sample(trace_ids, 4)) for _ in range(120)]
    cases = {}
    for text in POLICIES:
        policy = yaml.safe_load(text)
        # a drop policy alone keeps nothing: beside always_sample it keeps what it does not drop
        cases[policy.pop("name")] = [policy, {"type": "always_sample"}] if policy["type"] == "drop" else [policy]
    kept = _side_by_side(agents, otelcol, tmp_path, cases, bodies, wait=4)  # sending them takes under a second
    differences = {case: (sorted(set(mine) ^ set(reference)), len(reference))
                   for case, (mine, reference) in kept.items() if set(mine) != set(reference)}
    assert not differences, differences
    counts = {case: len(reference) for case, (_, reference) in kept.items()}
    assert all(0 < count < len(trace_ids) for count in counts.values()), counts


# settings below 0, which otelcol's config takes: bounds hold as written, "above 0" tests fail
NEGATIVE_CASES: dict[str, list[dict]] = {
    "latency_below_zero": [{"type": "latency", "latency": {"threshold_ms": -5}}],
    "latency_below_zero_truncated": [{"type": "latency", "latency": {"threshold_ms": -4}}],
    "latency_band_below_zero": [{"type": "latency", "latency": {"threshold_ms": -10, "upper_threshold_ms": -1}}],
    "span_count_min_below_zero": [{"type": "span_count", "span_count": {"min_spans": -3}}],
    "span_count_max_below_zero": [{"type": "span_count", "span_count": {"min_spans": -3, "max_spans": -1}}],
    "span_count_band_from_below_zero": [{"type": "span_count", "span_count": {"min_spans": -3, "max_spans": 2}}],
    "rate_limiting_burst_below_zero": [{"type": "rate_limiting", "rate_limiting": {
        "spans_per_second": 1_000_000, "burst_capacity": -1}}],
    "bytes_limiting_rate_below_zero": [{"type": "bytes_limiting", "bytes_limiting": {
        "bytes_per_second": -5, "burst_capacity": 100_000_000}}],
    "composite_percent_below_zero": [{"type": "composite", "composite": {
        "max_total_spans_per_second": 1_000_000, "composite_sub_policy": [{"name": "a", "type": "always_sample"}],
        "rate_allocation": [{"policy": "a", "percent": -5}]}}],
    "composite_total_below_zero": [{"type": "composite", "composite": {
        "max_total_spans_per_second": -1, "composite_sub_policy": [{"name": "a", "type": "always_sample"}]}}],
}
# (start, end) in ms from now of each span: a span that ends 4.5 ms (whole: 4) before it starts
# is the only kind of trace a negative duration bound tells apart
BACKWARDS = {b"\x11" * 16: [(0, 300)], b"\x12" * 16: [(0, 0)], b"\x13" * 16: [(10, 5.5)],
             b"\x14" * 16: [(0, 0), (1, 1), (2, 2)], b"\x15" * 16: [(10, 9.5)]}


def test_edgeagent_keeps_the_traces_otelcol_keeps_with_settings_below_zero(agents, otelcol, tmp_path):
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for trace_id, times in BACKWARDS.items():
        for index, (start, end) in enumerate(times):
            spans.add(trace_id=trace_id, span_id=bytes((index + 1,)) * 8, name="op",
                      start_time_unix_nano=_NOW + int(start * 10**6), end_time_unix_nano=_NOW + int(end * 10**6))
    kept = {case: (set(mine), set(reference)) for case, (mine, reference)
            in _side_by_side(agents, otelcol, tmp_path, NEGATIVE_CASES, [request.SerializeToString()]).items()}
    every, backwards = set(BACKWARDS), {b"\x13" * 16}
    assert kept == {
        "latency_below_zero": (every,) * 2,
        "latency_below_zero_truncated": (every - backwards,) * 2,
        "latency_band_below_zero": (backwards,) * 2,
        "span_count_min_below_zero": (every,) * 2,
        "span_count_max_below_zero": (set(),) * 2,
        "span_count_band_from_below_zero": (every - {b"\x14" * 16},) * 2,
        "rate_limiting_burst_below_zero": (every,) * 2,
        "bytes_limiting_rate_below_zero": (every,) * 2,
        "composite_percent_below_zero": (every,) * 2,
        "composite_total_below_zero": (set(),) * 2,
    }


SIZE = 700  # what otelcol counts of each trace below, padded to it


def _sized_requests() -> list[ExportTraceServiceRequest]:
    """Two requests of traces in every shape pdata sizes otherwise than protobuf: root spans, no
    resource, scope or status, attributes without value (nested too), links without ids; spread
    over scopes, resource spans and both requests, interleaved with other traces."""
    first, second = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    bare = first.resource_spans.add().scope_spans.add().spans  # no resource, no scope
    group = first.resource_spans.add(schema_url="https://schema/1")
    group.resource.attributes.add(key="service.name").value.string_value = "sized"
    group.resource.attributes.add(key="empty")  # no value
    scopes = [group.scope_spans.add(scope={"name": "a"}), group.scope_spans.add(scope={"name": "b"},
                                                                                 schema_url="s")]
    later = second.resource_spans.add()
    later.resource.SetInParent()
    late = later.scope_spans.add().spans
    ids = [bytes([0x30 + number]) * 16 for number in range(6)]
    bare.add(trace_id=ids[0], span_id=b"\x01" * 8, name="root")
    bare.add(trace_id=ids[1], span_id=b"\x02" * 8, name="root")
    for index, scope in enumerate(scopes):
        for trace_id in ids[1:5]:  # interleaved, in both scopes of the group
            span = scope.spans.add(trace_id=trace_id, span_id=bytes([index + 3]) * 8, parent_span_id=b"\x01" * 8,
                                   name="child", status={"code": Status.STATUS_CODE_ERROR} if index else None)
            span.attributes.add(key="nested").value.kvlist_value.values.add(key="no value")
            span.links.add(trace_id=trace_id if index else b"")
            span.events.add(name="e").attributes.add(key="x")
    for trace_id in (ids[2], ids[5]):
        late.add(trace_id=trace_id, span_id=b"\x09" * 8, parent_span_id=b"\x01" * 8, name="late")
    return [first, second]


def _limit_size(requests: list[ExportTraceServiceRequest], trace_id: bytes) -> int:
    """What otelcol counts of the trace toward maximum_trace_size_bytes."""
    from sampler.sizing import trace_sizes

    return sum(trace_sizes(request).get(trace_id, 0) for request in requests)


def _bucket_size(requests: list[ExportTraceServiceRequest], trace_id: bytes) -> int:
    """What the trace takes from a bytes_limiting bucket in otelcol."""
    from sampler.sizing import traces_size
    from sampler.split import split_by_trace

    return sum(traces_size(part.resource_spans) for request in requests
               for found, part, _, _ in split_by_trace(request) if found == trace_id)


def _padded(requests: list[ExportTraceServiceRequest], measure=_limit_size) -> list[ExportTraceServiceRequest]:
    """Each trace's first span gets an attribute that makes its `measure` SIZE."""
    firsts: dict[bytes, Span] = {}
    for request in requests:
        for group in request.resource_spans:
            for scope in group.scope_spans:
                for span in scope.spans:
                    firsts.setdefault(span.trace_id, span)

    def total(trace_id: bytes) -> int:
        return measure(requests, trace_id)

    for trace_id, span in firsts.items():
        pad = span.attributes.add(key="p")
        unpadded = total(trace_id)
        # a length one byte longer can take a byte more for itself: the key's length evens it out
        for length, key in itertools.product(range(SIZE - unpadded - 12, SIZE - unpadded), ("p", "pp")):
            pad.key, pad.value.string_value = key, "x" * length
            if total(trace_id) == SIZE:
                break
        assert total(trace_id) == SIZE, trace_id
    return requests


def test_edgeagent_drops_the_traces_otelcol_drops_as_too_large_one_byte_over_maximum_trace_size_bytes(
        agents, otelcol, tmp_path):
    bodies = [request.SerializeToString() for request in _padded(_sized_requests())]
    cases = {"at_the_limit": [{"type": "always_sample"}], "one_byte_over": [{"type": "always_sample"}]}
    settings = {"at_the_limit": {"maximum_trace_size_bytes": SIZE},
                "one_byte_over": {"maximum_trace_size_bytes": SIZE - 1}}
    kept = {case: (set(mine), set(reference)) for case, (mine, reference)
            in _side_by_side(agents, otelcol, tmp_path, cases, bodies, settings=settings).items()}
    every = {bytes([0x30 + number]) * 16 for number in range(6)}
    assert kept == {"at_the_limit": (every, every), "one_byte_over": (set(), set())}


def _with_unknown_fields(requests: list[ExportTraceServiceRequest]) -> list[ExportTraceServiceRequest]:
    """The requests with a field no OTLP version defines in every span, its attributes and links,
    and every resource and scope: a newer SDK's, or a vendor's."""
    unknown = length_delimited(99, b"u" * 40)
    for request in requests:
        for group in request.resource_spans:
            group.resource.MergeFromString(unknown)
            for scope in group.scope_spans:
                scope.scope.MergeFromString(unknown)
                for span in scope.spans:
                    for message in (span, *span.attributes, *span.links):
                        message.MergeFromString(unknown)
    return requests


@pytest.mark.parametrize("measure", ["maximum_trace_size_bytes", "bytes_limiting"])
def test_unknown_fields_count_toward_a_traces_size_as_little_as_in_otelcol_which_drops_them(agents, otelcol,
                                                                                            tmp_path, measure):
    """pdata drops what it does not know before sizing; edgeagent counted it, so a trace at the
    limit in otelcol was over it here (dropped as too large, or refused by the bucket)."""
    def known(requests: list[ExportTraceServiceRequest]) -> list[ExportTraceServiceRequest]:
        """Copies as pdata holds them: the padding aims at otelcol's size whatever the agent counts."""
        copies = [ExportTraceServiceRequest.FromString(request.SerializeToString()) for request in requests]
        for copy in copies:
            copy.DiscardUnknownFields()
        return copies

    if measure == "bytes_limiting":
        bodies = [r.SerializeToString() for r in _padded(_with_unknown_fields(_sized_requests()),
                                                         lambda requests, trace_id: _bucket_size(known(requests),
                                                                                                 trace_id))]
        cases = {"at_the_limit": [{"type": "bytes_limiting", "bytes_limiting": {
            "bytes_per_second": 1, "burst_capacity": SIZE}}]}
        kept = {case: (len(mine), len(reference))
                for case, (mine, reference) in _side_by_side(agents, otelcol, tmp_path, cases, bodies).items()}
        assert kept == {"at_the_limit": (1, 1)}
        return
    bodies = [r.SerializeToString() for r in _padded(
        _with_unknown_fields(_sized_requests()), lambda requests, trace_id: _limit_size(known(requests), trace_id))]
    kept = {case: (set(mine), set(reference)) for case, (mine, reference) in _side_by_side(
        agents, otelcol, tmp_path, {"at_the_limit": [{"type": "always_sample"}]}, bodies,
        settings={"at_the_limit": {"maximum_trace_size_bytes": SIZE}}).items()}
    every = {bytes([0x30 + number]) * 16 for number in range(6)}
    assert kept == {"at_the_limit": (every, every)}


def test_edgeagent_spends_from_a_bytes_limiting_bucket_what_otelcol_spends_of_a_trace(agents, otelcol, tmp_path):
    """A bucket of SIZE bytes (refilling 1 a second) takes one trace of SIZE bytes, one a byte smaller none."""
    bodies = [request.SerializeToString() for request in _padded(_sized_requests(), _bucket_size)]
    cases = {f"burst_{burst}": [{"type": "bytes_limiting", "bytes_limiting": {
        "bytes_per_second": 1, "burst_capacity": burst}}] for burst in (SIZE, SIZE - 1)}
    kept = {case: (len(mine), len(reference))
            for case, (mine, reference) in _side_by_side(agents, otelcol, tmp_path, cases, bodies).items()}
    assert kept == {f"burst_{SIZE}": (1, 1), f"burst_{SIZE - 1}": (0, 0)}
