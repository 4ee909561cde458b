"""OTLP attribute values as OTTL sees them (pcommon's Value through ottlcommon.GetValue), and
the text a value becomes where a converter asks for a string (StringLikeGetter)."""

from __future__ import annotations

import base64
import json
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

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
        return go_float_text(value)
    if isinstance(value, bytes):
        return value.hex()
    return json.dumps(_jsonable(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()  # Go's json.Marshal writes []byte as base64
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value
