"""OTLP AnyValue as text, as pcommon writes it: for the processors' matching and the sampler's span compression."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_SCALARS = ("string_value", "bool_value", "int_value", "double_value")


def value_as_string(value: AnyValue) -> str:
    """pcommon's Value.AsString for every value type."""
    kind = value.WhichOneof("value")
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
    if kind in ("kvlist_value", "array_value"):
        return json.dumps(_plain(value), separators=(",", ":"))
    return ""


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
    return value_as_string(value) if value.WhichOneof("value") in _SCALARS else None


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
