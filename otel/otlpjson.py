"""Messages written in the OTLP/JSON mapping: what the exporters send as `encoding: json`, what the
queue commands print and what the debug exporters write. (Reading OTLP/JSON is the receivers'
codec.)"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

# the byte fields OTLP/JSON writes as hex, where protobuf's JSON mapping writes base64
ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def to_otlp_json(message: Message, integer_enums: bool = False) -> dict[str, Any]:
    """A message in the OTLP/JSON mapping: camelCase keys, hex trace and span ids (enum values as
    integers, as the OTLP specification asks, with `integer_enums`)."""
    document = json_format.MessageToDict(message, use_integers_for_enums=integer_enums)
    _base64_ids_to_hex(document)
    return document


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
