"""OTLP AnyValue as text, as pcommon writes it: for the processors' matching and actions and the
sampler's span compression."""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_SCALARS = ("string_value", "bool_value", "int_value", "double_value")


def value_as_string(value: AnyValue) -> str:
    """pcommon's Value.AsString for every value type: doubles in JSON's number form (1e-7, 1e+21,
    Infinity), maps and lists as encoding/json writes them (keys sorted, no HTML escaping)."""
    kind = value.WhichOneof("value")
    if kind == "double_value":
        return _json_number(value.double_value)
    if kind in ("kvlist_value", "array_value"):
        try:
            return _json(_plain(value))
        except ValueError:  # NaN or an infinity inside: encoding/json fails, and AsString is empty
            return ""
    return _scalar_as_string(value, kind)


def _scalar_as_string(value: AnyValue, kind: str | None) -> str:
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return go_float_text(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return ""


def _json_number(number: float) -> str:
    """pcommon's float64AsString, encoding/json's form: plain digits from 1e-6 to 1e21, else the
    shortest exponent form with at least one exponent digit (1e-7, 1e+21)."""
    if number != number:
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0 or 1e-6 <= abs(number) < 1e21:
        return go_float_text(number)
    mantissa, _, exponent = repr(number).partition("e")
    return f"{mantissa}e{exponent[0]}{exponent[1:].lstrip('0') or '0'}"


def _json(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json(key)}:{_json(value[key])}" for key in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(item) for item in value) + "]"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("json: unsupported value")
        return _json_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return json.dumps(value)


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [_plain(item) for item in value.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind is None:
        return None
    return getattr(value, kind)


def scalar_text(value: AnyValue) -> str | None:
    """A scalar value as the string otelcol compares regexps against; None for bytes, maps and lists."""
    kind = value.WhichOneof("value")
    return _scalar_as_string(value, kind) if kind in _SCALARS else None


def go_float_text(number: float) -> str:
    """A float as Go's strconv.FormatFloat(f, 'f', -1, 64) writes it: shortest digits, no exponent."""
    if number != number:
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "+Inf" if number > 0 else "-Inf"
    text = repr(number)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def go_int64(number: float) -> int:
    """Go's int64(number) on amd64, where otelcol runs: truncation, and for NaN, the infinities and
    any double out of int64's range the "integer indefinite" value, math.MinInt64."""
    if number != number or not -(2.0 ** 63) <= number < 2.0 ** 63:
        return -1 << 63
    return int(number)


_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GO_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")
_GO_SPECIAL = re.compile(r"[+-]?(?:inf|infinity)|nan", re.IGNORECASE)


def go_parse_int(text: str) -> int:
    """Go's strconv.ParseInt(text, 10, 64); ValueError where it fails."""
    if not _GO_INT.fullmatch(text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    number = int(text)
    if not -(1 << 63) <= number < 1 << 63:
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return number


def go_parse_float(text: str) -> float:
    """Go's strconv.ParseFloat(text, 64): decimal or hexadecimal (with a p exponent), `_` between
    digits, inf/infinity/nan in any case (no sign on nan); ValueError where it fails, and for a
    value beyond float64 (not infinity, as Python's float gives)."""
    if _GO_SPECIAL.fullmatch(text):
        return float(text)
    digits = text.replace("_", "")
    if digits != text and not _underscores_ok(text):
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax')
    try:
        if _GO_HEX.fullmatch(digits):
            number = float.fromhex(digits)
        elif _GO_DECIMAL.fullmatch(digits):
            number = float(digits)
        else:
            raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax')
    except OverflowError:
        number = float("inf")
    if number in (float("inf"), float("-inf")):
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": value out of range')
    return number


def _underscores_ok(text: str) -> bool:
    """strconv's underscoreOK: each `_` between digits (a base prefix counts as one)."""
    body = text[1:] if text[:1] in "+-" else text
    hexadecimal = body[:2].lower() == "0x"
    saw, index = ("0", 2) if body[:2].lower() in ("0x", "0b", "0o") else ("^", 0)
    for char in body[index:]:
        if char.isdigit() and char.isascii() or hexadecimal and char.lower() in "abcdef":
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"
