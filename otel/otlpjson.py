"""Messages written in the OTLP/JSON mapping: what the exporters send as `encoding: json`, what the
queue commands print and what the debug exporters write. (Reading OTLP/JSON is the receivers'
codec.)"""

from __future__ import annotations

import base64
import functools
from types import ModuleType
from typing import Any, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

# the byte fields OTLP/JSON writes as hex, where protobuf's JSON mapping writes base64
ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def to_otlp_json(message: Message, integer_enums: bool = False) -> dict[str, Any]:
    """A message in the OTLP/JSON mapping: camelCase keys, hex trace and span ids (enum values as
    integers, as the OTLP specification asks, with `integer_enums`)."""
    document = message_to_dict(message, integer_enums)
    _base64_ids_to_hex(document)
    return document


def message_to_dict(message: Message, integer_enums: bool = False) -> dict[str, Any]:
    """A message in protobuf's JSON mapping (ids in base64)."""
    document: dict[str, Any] = _json_format().MessageToDict(message, use_integers_for_enums=integer_enums)
    return document


def parse_json(text: bytes, message: M) -> M:
    """`message` filled from protobuf's JSON mapping in `text`, unknown fields skipped; ValueError
    for what is no JSON of that message."""
    json_format = _json_format()
    try:
        json_format.Parse(text, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from exc
    return message


@functools.cache
def _json_format() -> ModuleType:
    """protobuf's JSON mapping, imported when first used: with the descriptor pool and the message
    runtime it brings, it is start-up time that an agent reading and writing protobuf never needs."""
    from google.protobuf import json_format

    return json_format


def _base64_ids_to_hex(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_FIELDS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            elif isinstance(value, (dict, list)):
                _base64_ids_to_hex(value)
    elif isinstance(node, list):
        for value in node:
            _base64_ids_to_hex(value)
