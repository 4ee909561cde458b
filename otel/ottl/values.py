"""OTLP attribute values as OTTL sees them (pcommon's Value through ottlcommon.GetValue), and
the text a value becomes where a converter asks for a string (StringLikeGetter)."""

from __future__ import annotations

import base64
import json
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel.ottl.errors import OttlEvalError
from otel.values import go_float_text


def plain(value: AnyValue) -> Any:
    """str, int, float, bool, bytes, a dict for a map, a list for a slice, None when empty."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "kvlist_value":
        out: dict[str, Any] = {}
        for kv in value.kvlist_value.values:
            out.setdefault(kv.key, plain(kv.value))
        return out
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    return None


def string_like(value: Any) -> str:
    """A non-nil value as text: OTTL's StringLikeGetter (bytes as hex, maps and slices as JSON
    with sorted keys, floats as Go prints them)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, bytes):
        return value.hex()
    return go_json(value)


# Go's JSON encoders escape these in strings; they cannot occur in JSON outside strings
_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
               ("\u2029", "\\u2029"))


def json_float(number: float) -> str:
    """A float as OTTL's JSON encoder (goccy/go-json) writes it: plain digits from 1e-6 to 1e21,
    else strconv's shortest exponent form, two exponent digits at least (1e-07, 1e+21), which
    is Python's repr there; NaN and infinities cannot be written (an evaluation error)."""
    if number != number or number in (float("inf"), float("-inf")):
        raise OttlEvalError(f"json: unsupported value: {go_float_text(number)}")
    if number == 0 or 1e-6 <= abs(number) < 1e21:
        return go_float_text(number)
    return repr(number)


def go_json(value: Any) -> str:
    """A raw value as OTTL's json.Marshal (goccy/go-json) writes it: map keys sorted, []byte as
    base64, floats as json_float, <, > and & escaped in strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, bytes):
        return f'"{base64.b64encode(value).decode()}"'
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_json(key)}:{go_json(value[key])}" for key in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(item) for item in value) + "]"
    text = json.dumps(str(value), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES:
        text = text.replace(char, escaped)
    return text
