"""Attribute keys without which a condition cannot match: what lets the policy skip a batch whose
serialized bytes contain none of them, as the attribute policies do.

A condition *needs* a key when, with that key absent, it is false and raises nothing:
  * `attributes["k"]... op literal`, for a literal other than nil and an operator other than
    `!=` (nil compared to a value is only `!=`), from any context (span, resource, scope, event);
  * `IsMatch(attributes["k"]..., "re")` (a nil target does not match);
  * `a and b ...` needs what `a` needs (`a` false stops it before anything else can fail);
  * `a or b ...` needs one of what each operand needs, when every operand needs some key.
Anything else needs nothing that can be known in advance. Protobuf writes a key as its UTF-8
bytes, so a batch holding the key shows them.
"""

from __future__ import annotations

from otel.ottl import ast

Keys = frozenset[str]


def needed_keys(node: ast.Boolean) -> Keys | None:
    """Keys of which one must be present for `node` to match; None when it may match without."""
    if isinstance(node, ast.Compare):
        return _compared(node)
    if isinstance(node, ast.Call):
        if node.function == "IsMatch" and len(node.args) == 2:
            return _attribute_key(node.args[0])
        return None
    if isinstance(node, ast.And):
        return needed_keys(node.operands[0])
    if isinstance(node, ast.Or):
        keys: set[str] = set()
        for operand in node.operands:
            needed = needed_keys(operand)
            if needed is None:
                return None
            keys |= needed
        return frozenset(keys)
    return None


def _compared(node: ast.Compare) -> Keys | None:
    if node.op == "!=":
        return None
    for side, other in ((node.left, node.right), (node.right, node.left)):
        if isinstance(other, (ast.Literal, ast.Enum)) and not (isinstance(other, ast.Literal) and other.value is None):
            keys = _attribute_key(side)
            if keys is not None:
                return keys
    return None


def _attribute_key(node: ast.Value) -> Keys | None:
    if isinstance(node, ast.Path) and node.names[-1] == "attributes" and node.keys and isinstance(node.keys[0], str):
        return frozenset((node.keys[0],))
    return None
