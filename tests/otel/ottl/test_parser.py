"""OTTL conditions read as otelcol's grammar reads them: tokens, precedence, and refusals that
point at the column where the condition goes wrong."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel.ottl import ast, compile_condition
from otel.ottl.errors import OttlSyntaxError
from otel.ottl.lexer import tokenize, unquote
from otel.ottl.parser import parse


def kinds(text: str) -> list[tuple[str, str]]:
    return [(token.kind, token.text) for token in tokenize(text)][:-1]


def test_tokens_follow_otelcols_rule_order():
    assert kinds('0x1f 1.5 .5 7 "a\\"b" nil not notes') == [
        ("BYTES", "0x1f"), ("FLOAT", "1.5"), ("FLOAT", ".5"), ("INT", "7"), ("STRING", '"a\\"b"'), ("NIL", "nil"),
        ("NOT", "not"), ("LOWER", "notes")]
    assert kinds("IsMatch(") == [("UPPER", "I"), ("LOWER", "s"), ("UPPER", "M"), ("LOWER", "atch"), ("LPAREN", "(")]
    assert kinds("a>=b") == [("LOWER", "a"), ("CMP", ">="), ("LOWER", "b")]


def test_string_escapes_are_gos():
    assert unquote(r'"a\tb\u00e9\x41\\"') == "a\tb\u00e9A\\"
    with pytest.raises(ValueError):
        unquote(r'"\q"')


def test_and_binds_tighter_than_or():
    tree = parse('name == "a" or name == "b" and kind == 2')
    assert isinstance(tree, ast.Or)
    assert isinstance(tree.operands[1], ast.And)


def test_not_negates_the_comparison_that_follows():
    tree = parse('not name == "a" and true')
    assert isinstance(tree, ast.And)
    assert isinstance(tree.operands[0], ast.Not)
    assert isinstance(tree.operands[0].operand, ast.Compare)


def test_parentheses_are_arithmetic_before_they_are_a_sub_condition():
    arithmetic = parse("(end_time_unix_nano - start_time_unix_nano) / 1000000 > 300")
    assert isinstance(arithmetic, ast.Compare) and isinstance(arithmetic.left, ast.Math)
    sub = parse('(name == "a" or name == "b") and kind == SPAN_KIND_SERVER')
    assert isinstance(sub, ast.And) and isinstance(sub.operands[0], ast.Or)


def test_a_negative_number_is_a_literal():
    tree = parse("attributes[\"x\"] > -5.5")
    assert isinstance(tree, ast.Compare) and tree.right == ast.Literal(-5.5, tree.right.offset)


def test_paths_keep_their_names_and_keys():
    tree = parse('resource.attributes["k8s"]["pod"][0] == nil')
    assert isinstance(tree, ast.Compare)
    assert tree.left == ast.Path(("resource", "attributes"), ("k8s", "pod", 0), 0)


def test_a_converter_name_is_joined_and_may_stand_alone():
    tree = parse('IsMatch(name, "^GET ")')
    assert isinstance(tree, ast.Call) and tree.function == "IsMatch" and len(tree.args) == 2


def test_an_enum_is_a_value():
    tree = parse("status.code == STATUS_CODE_ERROR")
    assert isinstance(tree, ast.Compare) and tree.right == ast.Enum("STATUS_CODE_ERROR", 15)


@pytest.mark.parametrize(("text", "offset", "words"), [
    ('attributes["k"]', 15, "comparison operator"),
    ("name == ", 8, "expected a value"),
    ('name == "a" and', 15, "expected a value"),
    ('name = "a"', 5, "comparison operator"),
    ('(name == "a"', 12, "')'"),
    ('name == "a" "b"', 12, "unexpected"),
    ("name == 'a'", 8, "unexpected character"),
    ('name == {"a": 1}', 8, "map literals"),
    ('attributes[name] == "a"', 11, "string or an integer literal"),
    ("not not true", 4, "found 'not'"),
    ('attributes["\\q"] == 1', 11, "invalid escape"),
    ("attributes[\"k\"] == 9223372036854775808", 19, "out of range"),
])
def test_a_condition_that_does_not_parse_is_refused_at_its_column(text, offset, words):
    with pytest.raises(OttlSyntaxError) as caught:
        parse(text)
    assert caught.value.offset == offset, caught.value
    assert words in caught.value.message
    assert f"column {offset + 1}" in caught.value.describe(text)


ALPHABET = list('()[]{},.:=!<>+-*/"\\ _q') + ["name", "attributes", "and", "or", "not", "nil", "true", "IsMatch",
                                            "SPAN_KIND_SERVER", "0x1f", "1.5", "7", '"a"', "span", "resource"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=14), st.sampled_from([" ", ""]))
def test_any_text_parses_and_compiles_or_is_refused_with_a_syntax_error(parts, separator):
    text = separator.join(parts)
    try:
        compile_condition(text, "span")
    except OttlSyntaxError as error:
        assert 0 <= error.offset <= len(text)


def test_a_condition_nested_beyond_the_stack_is_a_syntax_error():
    with pytest.raises(OttlSyntaxError) as caught:
        compile_condition("(" * 5000 + "true" + ")" * 5000, "span")
    assert "nested too deeply" in caught.value.message
