"""The OTTL converters conditions here may call, each as pkg/ottl's ottlfuncs defines it.

A converter is built once from its arguments' getters; what it checks at parse time in otelcol
(a literal regular expression, the number of arguments) is checked here when the condition is
compiled, and a name outside this table is refused then, with the supported names.

Argument kinds follow ottl's getters: a *string* argument must be a string (nil or another type
is an evaluation error); a *string-like* one turns any value into text (nil stays nil); an
*int-like* one parses strings and truncates floats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from otel.goregex import compile_go_regex
from otel.ottl import ast
from otel.ottl.errors import OttlEvalError, OttlSyntaxError
from otel.ottl.paths import Context, ContextName, Getter
from otel.ottl.values import string_like
from otel.values import go_int64, go_parse_float, go_parse_int

Builder = Callable[[Sequence[Getter], ast.Call], Getter]


def _string(getter: Getter, function: str) -> Getter:
    def get(ctx: Context) -> str:
        value = getter(ctx)
        if not isinstance(value, str):
            raise OttlEvalError(f"{function}: expected string but got {_type_name(value)}")
        return value
    return get


def _type_name(value: Any) -> str:
    return "nil" if value is None else {str: "string", int: "int64", float: "float64", bool: "bool", bytes: "[]byte",
                                        dict: "map", list: "slice"}.get(type(value), type(value).__name__)


def _is_type(*types: type) -> Builder:
    def build(args: Sequence[Getter], call: ast.Call) -> Getter:
        target = args[0]
        return lambda ctx: type(target(ctx)) in types
    return build


def _is_match(args: Sequence[Getter], call: ast.Call) -> Getter:
    pattern_node = call.args[1]
    if not (isinstance(pattern_node, ast.Literal) and isinstance(pattern_node.value, str)):
        raise OttlSyntaxError("IsMatch: the pattern must be a string literal here", pattern_node.offset)
    try:
        search = compile_go_regex(pattern_node.value).search
    except ValueError as exc:
        raise OttlSyntaxError(f"IsMatch: {exc}", pattern_node.offset) from None
    target = args[0]

    def get(ctx: Context) -> bool:
        value = target(ctx)
        return value is not None and search(string_like(value))
    return get


def _len(args: Sequence[Getter], call: ast.Call) -> Getter:
    target = args[0]

    def get(ctx: Context) -> int:
        value = target(ctx)
        if isinstance(value, str):
            return len(value.encode())  # Go counts bytes
        if isinstance(value, (list, dict, bytes)):
            return len(value)
        raise OttlEvalError(f"Len: unsupported target type {_type_name(value)}")
    return get


def _int(args: Sequence[Getter], call: ast.Call) -> Getter:
    target = args[0]

    def get(ctx: Context) -> int | None:
        value = target(ctx)
        if value is None or type(value) is int:
            return value
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float):
            return go_int64(value)  # truncates toward zero; NaN and out of range give MinInt64, as in Go
        if isinstance(value, str):
            try:
                return go_parse_int(value)
            except ValueError as exc:
                raise OttlEvalError(f"Int: {exc}") from None
        raise OttlEvalError(f"Int: unsupported type {_type_name(value)}")
    return get


def _double(args: Sequence[Getter], call: ast.Call) -> Getter:
    target = args[0]

    def get(ctx: Context) -> float | None:
        value = target(ctx)
        if value is None or type(value) is float:
            return value
        if isinstance(value, (bool, int)):
            return float(value)
        if isinstance(value, str):
            try:
                return go_parse_float(value)
            except ValueError as exc:
                raise OttlEvalError(f"Double: {exc}") from None
        raise OttlEvalError(f"Double: unsupported type {_type_name(value)}")
    return get


def _string_func(args: Sequence[Getter], call: ast.Call) -> Getter:
    target = args[0]

    def get(ctx: Context) -> str | None:
        value = target(ctx)
        return None if value is None else string_like(value)
    return get


def _concat(args: Sequence[Getter], call: ast.Call) -> Getter:
    if not isinstance(call.args[0], ast.ListValue):
        raise OttlSyntaxError("Concat: the values must be a list literal here ([a, b, ...])", call.args[0].offset)
    values, delimiter = args[0], _string(args[1], "Concat")

    def get(ctx: Context) -> str:
        separator = delimiter(ctx)
        return separator.join("<nil>" if value is None else string_like(value) for value in values(ctx))
    return get


def _affix(function: str, test: Callable[[str, str], bool]) -> Builder:
    def build(args: Sequence[Getter], call: ast.Call) -> Getter:
        target, affix = _string(args[0], function), _string(args[1], function)
        return lambda ctx: test(target(ctx), affix(ctx))
    return build


def _case(function: str, change: Callable[[str], str]) -> Builder:
    def build(args: Sequence[Getter], call: ast.Call) -> Getter:
        target = _string(args[0], function)
        return lambda ctx: change(target(ctx))
    return build


def _by_rune(text: str, change: Callable[[str], str]) -> str:
    """Go's strings.ToUpper / ToLower: each rune by its simple case mapping, so no rune becomes
    two (ß stays ß, not SS) and none depends on its neighbours (a final Σ is σ)."""
    if text.isascii():
        return change(text)
    return "".join(_simple_case(char, change) for char in text)


def _simple_case(char: str, change: Callable[[str], str]) -> str:
    changed = change(char)
    if len(changed) == 1:
        return changed
    if char == "\u0130":  # İ: lower-cased alone by the simple mapping
        return "i"
    titled = char.title()  # where the full upper mapping is two runes, the simple one is the title case
    return titled if change is str.upper and len(titled) == 1 else char


def _is_root_span(args: Sequence[Getter], call: ast.Call) -> Getter:
    return lambda ctx: not any(ctx.span.parent_span_id)


def _literal_text(call: ast.Call, index: int) -> str:
    arg = call.args[index]
    if not isinstance(arg, ast.Literal) or not isinstance(arg.value, str):
        raise OttlSyntaxError(f"{call.function}: argument {index + 1} must be a string literal", call.offset)
    return arg.value


def _has_attr_on_datapoint(with_value: bool) -> Builder:
    """filterprocessor's HasAttrKeyOnDatapoint(key) / HasAttrOnDatapoint(key, value), as its
    checkDataPoints: the first data point holding the key decides (its value as a string equal
    to `value`; a value of another type reads as ""); a metric without data is an error."""
    def build(args: Sequence[Getter], call: ast.Call) -> Getter:
        key = _literal_text(call, 0)
        expected = _literal_text(call, 1) if with_value else None

        def get(ctx: Context) -> bool:
            kind = ctx.metric.WhichOneof("data")
            if kind is None:
                raise OttlEvalError("unknown metric type")
            for point in getattr(ctx.metric, kind).data_points:
                for kv in point.attributes:
                    if kv.key == key:
                        if expected is None:
                            return True
                        return kv.value.string_value == expected
            return False
        return get
    return build


_ALL = ("span", "spanevent", "log", "metric", "datapoint", "resource", "scope")
# name -> (number of arguments, builder, contexts where otelcol offers it)
CONVERTERS: dict[str, tuple[int, Builder, tuple[str, ...]]] = {
    "IsMatch": (2, _is_match, _ALL),
    "IsString": (1, _is_type(str), _ALL),
    "IsInt": (1, _is_type(int), _ALL),
    "IsDouble": (1, _is_type(float), _ALL),
    "IsBool": (1, _is_type(bool), _ALL),
    "IsMap": (1, _is_type(dict), _ALL),
    "IsList": (1, _is_type(list), _ALL),
    "Len": (1, _len, _ALL),
    "Int": (1, _int, _ALL),
    "Double": (1, _double, _ALL),
    "String": (1, _string_func, _ALL),
    "Concat": (2, _concat, _ALL),
    "HasPrefix": (2, _affix("HasPrefix", str.startswith), _ALL),
    "HasSuffix": (2, _affix("HasSuffix", str.endswith), _ALL),
    "ToLowerCase": (1, _case("ToLowerCase", lambda text: _by_rune(text, str.lower)), _ALL),
    "ToUpperCase": (1, _case("ToUpperCase", lambda text: _by_rune(text, str.upper)), _ALL),
    "IsRootSpan": (0, _is_root_span, ("span",)),
    "HasAttrKeyOnDatapoint": (1, _has_attr_on_datapoint(False), ("metric",)),
    "HasAttrOnDatapoint": (2, _has_attr_on_datapoint(True), ("metric",)),
}


def build_call(call: ast.Call, args: Sequence[Getter], context: ContextName) -> Getter:
    """The converter's getter; OttlSyntaxError for an unknown function or a wrong argument count."""
    entry = CONVERTERS.get(call.function)
    if entry is None or context not in entry[2]:
        supported = ", ".join(name for name, (_, _, contexts) in CONVERTERS.items() if context in contexts)
        raise OttlSyntaxError(f"function {call.function} is not supported in a {context} condition; supported: "
                              f"{supported}", call.offset)
    count, builder, _ = entry
    if call.named:
        raise OttlSyntaxError(f"{call.function}: named arguments are not supported here", call.offset)
    if len(args) != count:
        raise OttlSyntaxError(f"{call.function} takes {count} argument{'s' if count != 1 else ''}, "
                              f"got {len(args)}", call.offset)
    return builder(args, call)
