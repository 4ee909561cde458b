"""An OTTL condition's tree compiled, once, into Python closures over a span's Context.

Each node becomes one function; paths read their one field, literals are constants, and `and`
/ `or` stop at the first operand that decides, as otelcol's do (an error in an operand that is
not reached does not happen). Arithmetic follows pkg/ottl's math.go: int64 with int64 stays
int64 (wrapping on overflow, `/` truncating toward zero), a float makes both float64, dividing
by zero and any other operand type are evaluation errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel.ottl import ast
from otel.ottl.compare import OPERATORS, compare
from otel.ottl.errors import OttlEvalError, OttlSyntaxError
from otel.ottl.functions import build_call
from otel.ottl.parser import parse
from otel.ottl.paths import CONTEXT_ENUMS, Context, ContextName, Getter, compile_path

Test = Callable[[Context], bool]


def compile_condition(text: str, context: ContextName) -> Test:
    """The condition as a test of one context (a span, span event, log record, metric, data point, resource);
    OttlSyntaxError when it does not parse or names what is not supported."""
    return compile_tree(parse(text), context)


def compile_tree(tree: ast.Boolean, context: ContextName) -> Test:
    """As compile_condition, for a condition already parsed."""
    return _boolean(tree, context)


def _boolean(node: ast.Boolean, context: ContextName) -> Test:
    if isinstance(node, ast.Compare):
        return _comparison(node, context)
    if isinstance(node, ast.BoolConst):
        constant = node.value
        return lambda ctx: constant
    if isinstance(node, ast.Not):
        inner = _boolean(node.operand, context)
        return lambda ctx: not inner(ctx)
    if isinstance(node, ast.And):
        return _all(tuple(_boolean(operand, context) for operand in node.operands))
    if isinstance(node, ast.Or):
        return _any(tuple(_boolean(operand, context) for operand in node.operands))
    return _converter_test(node, context)


def _all(tests: tuple[Test, ...]) -> Test:
    if len(tests) == 2:
        first, second = tests
        return lambda ctx: first(ctx) and second(ctx)

    def test(ctx: Context) -> bool:
        for each in tests:
            if not each(ctx):
                return False
        return True
    return test


def _any(tests: tuple[Test, ...]) -> Test:
    if len(tests) == 2:
        first, second = tests
        return lambda ctx: first(ctx) or second(ctx)

    def test(ctx: Context) -> bool:
        for each in tests:
            if each(ctx):
                return True
        return False
    return test


def _converter_test(node: ast.Call, context: ContextName) -> Test:
    getter = _value(node, context)

    def test(ctx: Context) -> bool:
        result = getter(ctx)
        if type(result) is not bool:
            raise OttlEvalError(f"value returned from {node.function} in a condition must be bool but got "
                                f"{type(result).__name__}")
        return result
    return test


def _comparison(node: ast.Compare, context: ContextName) -> Test:
    op = node.op
    left, right = node.left, node.right
    left_getter = _value(left, context)
    right_getter = _value(right, context)
    if isinstance(right, ast.Literal):  # the usual `path op literal`
        return _against_constant(left_getter, op, right.value)
    if isinstance(right, ast.Enum):
        return _against_constant(left_getter, op, CONTEXT_ENUMS[context][right.name])  # known: _value checked it
    return lambda ctx: compare(left_getter(ctx), right_getter(ctx), op)


def _against_constant(getter: Getter, op: str, constant: Any) -> Test:
    """`getter op constant`, with compare's type dispatch done once for the constant's type: the
    same answers as compare (test_evaluate checks them against it), fewer steps per span."""
    mismatch = op == "!="
    if constant is None:
        nil = op in ("==", "<=", ">=")
        return lambda ctx: nil if getter(ctx) is None else mismatch
    apply = OPERATORS[op]
    kind = type(constant)
    if kind is str:
        def text(ctx: Context) -> bool:
            value = getter(ctx)
            return apply(value, constant) if type(value) is str else mismatch
        return text
    if kind is int or kind is float:
        def number(ctx: Context) -> bool:
            value = getter(ctx)
            kind_of = type(value)
            if kind_of is kind:
                return apply(value, constant)
            if kind_of is int or kind_of is float:
                return apply(float(value), float(constant))  # as Go: int64 to float64
            return mismatch
        return number
    return lambda ctx: compare(getter(ctx), constant, op)


def _value(node: ast.Value, context: ContextName) -> Getter:
    if isinstance(node, ast.Literal):
        constant = node.value
        return lambda ctx: constant
    if isinstance(node, ast.Enum):
        enums = CONTEXT_ENUMS[context]
        if node.name not in enums:
            raise OttlSyntaxError(f"enum {node.name} is not known in a {context} condition; known: "
                                  f"{', '.join(enums) or 'none'}", node.offset)
        number = enums[node.name]
        return lambda ctx: number
    if isinstance(node, ast.Path):
        return compile_path(node, context)
    if isinstance(node, ast.Call):
        return build_call(node, [_value(arg, context) for arg in node.args], context)
    if isinstance(node, ast.ListValue):
        items = tuple(_value(item, context) for item in node.items)
        return lambda ctx: [item(ctx) for item in items]
    if isinstance(node, ast.Negate):
        operand = _value(node.operand, context)
        return lambda ctx: _negate(operand(ctx))
    left, right, op = _value(node.left, context), _value(node.right, context), node.op
    return lambda ctx: arithmetic(left(ctx), op, right(ctx))


def _negate(value: Any) -> Any:
    if type(value) is int:
        return _wrap(-value)
    if type(value) is float:
        return -value
    raise OttlEvalError(f"unsupported unary minus operation on type {type(value).__name__}")


def _wrap(number: int) -> int:
    return (number + 2**63) % 2**64 - 2**63


def arithmetic(left: Any, op: str, right: Any) -> Any:
    """`left op right` as pkg/ottl's attemptMathOperation on int64 and float64."""
    left_type, right_type = type(left), type(right)
    if left_type not in (int, float) or right_type not in (int, float):
        raise OttlEvalError(f"{right if left_type in (int, float) else left} must be int64 or float64")
    if op == "/" and right == 0:
        raise OttlEvalError("attempted to divide by 0")
    if left_type is int and right_type is int:
        if op == "+":
            return _wrap(left + right)
        if op == "-":
            return _wrap(left - right)
        if op == "*":
            return _wrap(left * right)
        quotient = abs(left) // abs(right)
        return _wrap(quotient if (left < 0) == (right < 0) else -quotient)
    left, right = float(left), float(right)
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return left / right
