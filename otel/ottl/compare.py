"""OTTL's comparison rules (pkg/ottl compare.go) on the values conditions see.

Values are Python's: str, int (int64), float (float64), bool, bytes, None (nil), dict (a map)
and list (a slice). What otelcol does, done here:
  * nil equals nil (so nil <= nil, nil >= nil); nil against anything else is only `!=`.
  * int and float compare as numbers; strings by bytes; bools with false < true; bytes by bytes.
  * maps and lists only `==` and `!=`, by deep equality where types must match exactly.
  * Anything else (a string against an int, a bool against a number, a map against a list) is
    no error: every operator is false except `!=`, which is true.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_NUMBERS = (int, float)


def compare(left: Any, right: Any, op: str) -> bool:
    """`left op right` as OTTL evaluates it."""
    if left is None:
        if right is None:
            return op in ("==", "<=", ">=")
        return op == "!="
    if right is None:
        return op == "!="
    left_type, right_type = type(left), type(right)
    if left_type in _NUMBERS and right_type in _NUMBERS:
        if left_type is not right_type:
            left, right = float(left), float(right)
        return _ordered(left, right, op)
    if left_type is not right_type:
        return op == "!="
    if left_type is str or left_type is bytes:
        return OPERATORS[op](left, right)
    if left_type is bool:
        return OPERATORS[op](int(left), int(right))
    if left_type is dict or left_type is list:
        if op == "==":
            return deep_equal(left, right)
        if op == "!=":
            return not deep_equal(left, right)
        return False
    return op == "!="


def _ordered(left: int | float, right: int | float, op: str) -> bool:
    if op == "!=":
        return left != right  # NaN != NaN, as in Go
    return OPERATORS[op](left, right)


def deep_equal(left: Any, right: Any) -> bool:
    """Go's reflect.DeepEqual on raw values: types must match (1 is not 1.0, true is not 1)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(deep_equal(left[key], right[key]) for key in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(deep_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, float) and math.isnan(left):
        return False
    return bool(left == right)
