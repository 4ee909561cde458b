"""OTTL conditions evaluated on a span and a span event as otelcol evaluates them: the comparison
rules (a type mismatch is false, not an error; nil), paths, converters and error modes."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from otel.ottl import ConditionSequence, Context, OttlEvalError, OttlSyntaxError, ast, compile_condition
from otel.ottl.compare import compare
from otel.ottl.parser import parse
from otel.ottl.paths import ENUMS
from otel.ottl.values import string_like


def _set(kvs, **values) -> None:
    for key, value in values.items():
        kv = kvs.add(key=key)
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        elif isinstance(value, bytes):
            kv.value.bytes_value = value
        elif isinstance(value, list):
            kv.value.array_value.values.extend(AnyValue(string_value=item) for item in value)
        elif isinstance(value, dict):
            _set(kv.value.kvlist_value.values, **value)
        else:
            kv.value.string_value = value


@pytest.fixture
def ctx() -> Context:
    group = ResourceSpans(schema_url="https://schema/1")
    _set(group.resource.attributes, **{"service.name": "checkout"})
    scope = group.scope_spans.add()
    scope.scope.name, scope.scope.version = "io.lib", "1.2"
    span = scope.spans.add(name="GET /cart", kind=Span.SPAN_KIND_SERVER, trace_id=bytes(range(16)),
                           span_id=b"\x01" * 8, start_time_unix_nano=1_000_000_000,
                           end_time_unix_nano=1_450_000_000, dropped_attributes_count=3)
    span.status.code, span.status.message = Status.STATUS_CODE_ERROR, "boom"
    _set(span.attributes, **{"http.status_code": 503, "ratio": 0.5, "flag": True, "text": "503", "raw": b"\xab",
                             "list": ["a", "b"], "map": {"inner": "x"}})
    span.attributes.add(key="http.status_code").value.int_value = 200  # a repeated key: the first counts
    event = span.events.add(name="exception", time_unix_nano=1_200_000_000)
    _set(event.attributes, **{"exception.type": "KeyError"})
    return Context(group, scope, span, event)


def check(text: str, ctx: Context, context: str = "span") -> bool:
    return compile_condition(text, context)(ctx)


@pytest.mark.parametrize(("left", "op", "right", "expected"), [
    (None, "==", None, True), (None, "<=", None, True), (None, "!=", None, False), (None, "<", None, False),
    ("a", "==", None, False), (None, "!=", "a", True), (None, ">", 1, False),
    (1, "==", 1.0, True), (2, ">", 1.5, True), (1, "<", "2", False), (1, "!=", "1", True),
    ("b", ">", "a", True), ("a", "==", 1, False),
    (True, "==", 1, False), (True, "!=", 1, True), (False, "<", True, True), (True, ">=", True, True),
    (b"\x01", "<", b"\x02", True), (b"\x01", "==", "01", False),
    ({"a": 1}, "==", {"a": 1}, True), ({"a": 1}, "==", {"a": 1.0}, False), ({"a": 1}, "<", {"a": 2}, False),
    (["a"], "==", ["a"], True), (["a"], "!=", {"a": 1}, True), (float("nan"), "!=", float("nan"), True),
])
def test_comparisons_follow_ottls_rules(left, op, right, expected):
    assert compare(left, right, op) is expected


@pytest.mark.parametrize(("text", "expected"), [
    ('attributes["http.status_code"] >= 500', True),
    ('attributes["http.status_code"] == 200', False),  # the first of a repeated key
    ('attributes["http.status_code"] == "503"', False),  # an int is never equal to a string
    ('attributes["http.status_code"] != "503"', True),
    ('attributes["text"] > 500', False),
    ('attributes["ratio"] < 1', True),
    ('attributes["flag"] == true', True),
    ('attributes["raw"] == 0xab', True),
    ('attributes["missing"] == nil', True),
    ('attributes["missing"] != nil', False),
    ('attributes["missing"] < 5', False),
    ('attributes["list"][1] == "b"', True),
    ('attributes["map"]["inner"] == "x"', True),
    ('attributes["map"]["nope"] == nil', True),
    ('span.attributes["flag"] == true', True),
    ('name == "GET /cart"', True),
    ("kind == SPAN_KIND_SERVER", True),
    ("kind == 2", True),
    ('kind.string == "Server"', True),
    ('kind.deprecated_string == "SPAN_KIND_SERVER"', True),
    ("status.code == STATUS_CODE_ERROR", True),
    ("status.code != STATUS_CODE_OK", True),
    ('status.message == "boom"', True),
    ('trace_id.string == "000102030405060708090a0b0c0d0e0f"', True),
    ('span_id.string == "0101010101010101"', True),
    ('parent_span_id.string == "0000000000000000"', True),
    ("end_time_unix_nano - start_time_unix_nano >= 450000000", True),
    ("(end_time_unix_nano - start_time_unix_nano) / 1000000 == 450", True),
    ("dropped_attributes_count == 3", True),
    ('resource.attributes["service.name"] == "checkout"', True),
    ('resource.schema_url == "https://schema/1"', True),
    ('instrumentation_scope.name == "io.lib" and scope.version == "1.2"', True),
    ('not name == "GET /cart" or kind == SPAN_KIND_CLIENT', False),
    ("not (true and false)", True),
    ('IsMatch(name, "^GET /c")', True),
    ('IsMatch(name, "^/cart")', False),
    ('IsMatch(attributes["http.status_code"], "^5..$")', True),  # a number is matched as its text
    ('IsMatch(attributes["missing"], ".*")', False),
    ('IsString(attributes["text"]) and not IsString(attributes["http.status_code"])', True),
    ('IsInt(attributes["http.status_code"]) and not IsInt(attributes["flag"])', True),
    ('IsDouble(attributes["ratio"]) and IsBool(attributes["flag"])', True),
    ('IsMap(attributes["map"]) and IsList(attributes["list"])', True),
    ('Len(attributes["list"]) == 2 and Len(name) == 9', True),
    ('Int(attributes["text"]) == 503', True),
    ('Int(attributes["ratio"]) == 0', True),
    ('Int(attributes["missing"]) == nil', True),
    ('Double(attributes["text"]) == 503.0', True),
    ('String(attributes["http.status_code"]) == "503"', True),
    ('Concat([name, attributes["missing"]], "|") == "GET /cart|<nil>"', True),
    ('HasPrefix(name, "GET") and HasSuffix(name, "cart")', True),
    ('ToLowerCase(name) == "get /cart"', True),
    ("IsRootSpan()", True),
])
def test_span_conditions_read_the_span_as_otelcol(ctx, text, expected):
    assert check(text, ctx) is expected


@pytest.mark.parametrize(("text", "expected"), [
    ('name == "exception"', True),
    ('spanevent.name == "exception" and span.name == "GET /cart"', True),
    ('attributes["exception.type"] == "KeyError"', True),
    ('attributes["http.status_code"] == nil', True),  # the event's attributes, not the span's
    ("time_unix_nano > span.start_time_unix_nano", True),
    ('resource.attributes["service.name"] == "checkout"', True),
])
def test_spanevent_conditions_read_the_event_and_its_span(ctx, text, expected):
    assert check(text, ctx, "spanevent") is expected


@pytest.mark.parametrize("text", [
    'HasPrefix(attributes["missing"], "a")',  # a string argument that is nil
    'Int(name) == 1',  # not a number
    'attributes["list"][5] == "a"',  # out of range
    'attributes["text"]["k"] == "a"',  # indexing a string
    "attributes[\"http.status_code\"] / 0 == 1",
    'attributes["text"] + 1 == 2',
    'Len(attributes["http.status_code"]) == 1',
    "Len(name)",  # a converter in boolean position must give a bool
])
def test_a_failing_condition_raises_an_evaluation_error(ctx, text):
    with pytest.raises(OttlEvalError):
        check(text, ctx)


# strconv's syntax and Go's conversions, as otelcol 0.165 answered them side by side (None: an evaluation error)
GO_CONVERSIONS = [
    ("Int(Double(V)) < 0", "NaN", True), ("Int(Double(V)) < 0", "1e300", True),  # int64() gives MinInt64
    ("Double(V) == 1000.5", "1_000.5", True), ("Double(V) == 0.75", "0x1.8p-1", True), ("Double(V) > 0", "1e1_0", True),
    ("Double(V) > 0", "INFINITY", True), ("Double(V) > 0", "1e400", None), ("Double(V) != 0", "-nan", None),
    ("Double(V) > 0", "0x10", None), ("Double(V) > 0", "1__0", None), ("Double(V) > 0", "1_.5", None),
    ('ToUpperCase(V) == "STRAßE"', "straße", True), ('ToLowerCase(V) == "iασ"', "İΑΣ", True),  # rune by rune
]


@pytest.mark.parametrize(("text", "value", "expected"), GO_CONVERSIONS, ids=[f"{t} {v}" for t, v, _ in GO_CONVERSIONS])
def test_converters_parse_and_convert_numbers_and_case_as_go_does(ctx, text, value, expected):
    ctx.span.attributes.add(key="v").value.string_value = value
    condition = text.replace("V", 'attributes["v"]')
    if expected is None:
        with pytest.raises(OttlEvalError):
            check(condition, ctx)
    else:
        assert check(condition, ctx) is expected


def test_and_or_stop_before_an_operand_that_would_fail(ctx):
    assert check('false and Int(name) == 1', ctx) is False
    assert check('true or Int(name) == 1', ctx) is True


@pytest.mark.parametrize(("mode", "outcome"), [("propagate", OttlEvalError), ("ignore", True), ("silent", True),
                                               (None, True)])
def test_error_mode_decides_whether_a_failing_condition_ends_the_sequence(ctx, mode, outcome):
    sequence = ConditionSequence(['Int(name) == 1', 'name == "GET /cart"'], "span", mode)
    if outcome is OttlEvalError:
        with pytest.raises(OttlEvalError):
            sequence.matches(ctx)
    else:
        assert sequence.matches(ctx) is outcome


def test_conditions_are_or_ed(ctx):
    assert ConditionSequence(['name == "x"', "kind == 2"], "span", None).matches(ctx)
    assert not ConditionSequence(['name == "x"', "kind == 3"], "span", None).matches(ctx)


@pytest.mark.parametrize(("text", "context", "words"), [
    ("Frobnicate(name)", "span", "function Frobnicate is not supported"),
    ("IsRootSpan()", "spanevent", "IsRootSpan is not supported in a spanevent"),
    ("IsMatch(name)", "span", "takes 2 arguments"),
    ("IsMatch(name, attributes[\"p\"])", "span", "string literal"),
    ("IsMatch(name, \"(\")", "span", "invalid regular expression"),
    ("trace_id == 0x00", "span", "trace_id.string"),
    ("start_time > 0", "span", "start_time_unix_nano"),
    ("status == 1", "span", "not supported"),
    ('events == nil', "span", "not supported"),
    ('spanevent.name == "x"', "span", "not supported in a span condition"),
    ('name["k"] == "x"', "span", "only attributes take an index"),
    ("kind == SPAN_KIND_SERVERS", "span", "SPAN_KIND_SERVERS is not known"),
])
def test_what_is_not_supported_is_refused_at_compile_time(text, context, words):
    with pytest.raises(OttlSyntaxError) as caught:
        compile_condition(text, context)
    assert words in caught.value.message


VALUES = [None, "a", "b", "", 0, 1, 2**53 + 1, -1, 1.0, 0.5, float("nan"), True, False, b"\x01", ["a"], {"k": "v"}]
LITERALS = ['"a"', '""', "1", "0", "9007199254740993", "-1", "1.0", "0.5", "true", "nil", "0x01", "SPAN_KIND_SERVER"]


@pytest.mark.parametrize("literal", LITERALS)
@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_a_comparison_with_a_literal_answers_as_the_general_rules(ctx, op, literal):
    text = f'attributes["v"] {op} {literal}'
    test, tree = compile_condition(text, "span"), parse(text)
    assert isinstance(tree, ast.Compare)
    constant = ENUMS[tree.right.name] if isinstance(tree.right, ast.Enum) else tree.right.value  # type: ignore[union-attr]
    for value in VALUES:
        del ctx.span.attributes[:]
        if value is not None:
            _set(ctx.span.attributes, v=value)
        assert test(ctx) is compare(value, constant, op), (value, op, literal)


@pytest.mark.parametrize(("value", "text"), [
    (503, "503"), (True, "true"), (0.5, "0.5"), (123.0, "123"), (1e-7, "1e-07"), (1e21, "1e+21"), (b"\xab", "ab"),
    (["a", 1, 1.0, None, b"ab"], '["a",1,1,null,"YWI="]'),
    ({"b": 1, "a": "<&>"}, '{"a":"\\u003c\\u0026\\u003e","b":1}'),
])
def test_values_become_text_as_ottls_string_like_getter_writes_them(value, text):
    assert string_like(value) == text


def test_a_float_json_cannot_write_is_an_evaluation_error():
    with pytest.raises(OttlEvalError):
        string_like(float("nan"))


def test_attributes_indexed_by_a_number_are_refused_at_the_path():
    with pytest.raises(OttlSyntaxError) as caught:
        compile_condition('name == "a" and attributes[0] == "x"', "span")
    assert caught.value.offset == 16 and "string key" in caught.value.message
