"""The syntax tree of one OTTL condition: what the parser builds and the compiler turns into code.

Boolean nodes (Or, And, Not, Compare, BoolConst, and a Call in boolean position) and value
nodes (Literal, Enum, Path, Call, Math, Negate, ListValue). Every node keeps the offset it starts
at, so the compiler's refusals point into the condition as the parser's do.
"""

from __future__ import annotations

from dataclasses import dataclass

Scalar = str | int | float | bool | bytes | None


@dataclass(frozen=True)
class Literal:
    value: Scalar
    offset: int


@dataclass(frozen=True)
class Enum:
    name: str
    offset: int


@dataclass(frozen=True)
class Path:
    """`resource.attributes["k"][0]`: names ("resource", "attributes") and keys ("k", 0)."""

    names: tuple[str, ...]
    keys: tuple[str | int, ...]
    offset: int

    def text(self) -> str:
        keys = "".join(f'["{key}"]' if isinstance(key, str) else f"[{key}]" for key in self.keys)
        return ".".join(self.names) + keys


@dataclass(frozen=True)
class Call:
    """A converter: `IsMatch(name, "^GET")`; `named` holds `name = value` arguments."""

    function: str
    args: tuple[Value, ...]
    named: tuple[tuple[str, Value], ...]
    offset: int


@dataclass(frozen=True)
class ListValue:
    items: tuple[Value, ...]
    offset: int


@dataclass(frozen=True)
class Math:
    op: str  # + - * /
    left: Value
    right: Value
    offset: int


@dataclass(frozen=True)
class Negate:
    operand: Value
    offset: int


@dataclass(frozen=True)
class Compare:
    op: str  # == != < <= > >=
    left: Value
    right: Value
    offset: int


@dataclass(frozen=True)
class BoolConst:
    value: bool
    offset: int


@dataclass(frozen=True)
class Not:
    operand: Boolean
    offset: int


@dataclass(frozen=True)
class And:
    operands: tuple[Boolean, ...]
    offset: int


@dataclass(frozen=True)
class Or:
    operands: tuple[Boolean, ...]
    offset: int


Value = Literal | Enum | Path | Call | ListValue | Math | Negate
Boolean = Or | And | Not | Compare | BoolConst | Call
