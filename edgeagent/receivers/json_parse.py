"""Reading an OTLP/JSON document into its message: protobuf's JSON parser, refusing what pdata
refuses. Imported with the first JSON request (codec._json_parse): with protobuf's JSON mapping
it is start-up time that an agent serving protobuf never needs."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from edgeagent.signals import Signal
from otel.otlpjson import ID_FIELDS


def parse(document: dict[str, Any], message: Message) -> None:
    """Fill `message` from `document` (ids already base64); ValueError for what is no OTLP/JSON of it."""
    try:
        _Parser(True, None, _MAX_DEPTH).ConvertMessage(document, message, "")
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from exc


_MAX_DEPTH = 100  # json_format.ParseDict's default
_ParseDictParser: Any = getattr(json_format, "_Parser")  # noqa: B009 (not in the type stubs)


class _Parser(_ParseDictParser):
    """ParseDict's parser, refusing an unknown enum name as pdata's ReadEnumValue does ("unknown
    string value"): ignore_unknown_fields, needed to skip unknown keys as pdata does, would also
    read it as 0 (a Sum without temporality, which backends drop). Any number is kept. And
    refusing what is no object where a message belongs, as pdata's ReadObject does: the parser
    would read the characters of `"body": "hello"` as unknown keys, an empty body. Two members of
    one oneof keep the last, as in pdata, where the parser refuses them."""

    def ConvertMessage(self, value: Any, message: Message, path: str) -> None:
        if not isinstance(value, dict):
            raise json_format.ParseError(f"expected a JSON object for {message.DESCRIPTOR.name} at "
                                         f"{path.lstrip('.') or message.DESCRIPTOR.name}, got {type(value).__name__}")
        super().ConvertMessage(value, message, path)

    def _ConvertFieldValuePair(self, js: dict[str, Any], message: Message, path: str) -> None:
        if len(js) > 1 and (oneofs := _ONEOFS.get(message.DESCRIPTOR)):
            for members in oneofs:
                given = [key for key, value in js.items() if key in members and value is not None]
                if len(given) > 1:  # pdata sets the oneof at each member given, so the last stays
                    js = {key: value for key, value in js.items() if key not in given[:-1]}
        super()._ConvertFieldValuePair(js, message, path)

    def _ConvertAndSetScalar(self, message: Message, field: FieldDescriptor, js_value: Any, path: str) -> None:
        enum = field.enum_type
        if enum is not None and isinstance(js_value, str) and js_value not in enum.values_by_name:
            raise json_format.ParseError(f"unknown {enum.name} value {js_value!r} at {path.lstrip('.')}")
        # ids are base64 of our own making (_hex_ids_to_base64): checking them again took 8% of a span's parse
        if field.type == FieldDescriptor.TYPE_BYTES and isinstance(js_value, str) and field.json_name not in ID_FIELDS:
            _check_base64(js_value, path)
        try:
            super()._ConvertAndSetScalar(message, field, js_value, path)
        except json_format.ParseError:
            if not isinstance(js_value, str) or not _SURROGATE.search(js_value):
                raise
            # a lone surrogate escape ("\ud83d", a pair cut in two): U+FFFD, as pdata reads it
            super()._ConvertAndSetScalar(message, field, _SURROGATE.sub("\ufffd", js_value), path)


_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins escaped pairs: what is left is alone
_URL_SAFE = str.maketrans("-_", "+/")


def _check_base64(value: str, path: str) -> None:
    """Refuse bytes that are no base64, as pdata does: the parser skips what is no base64 character
    and would keep other bytes than were sent. Padding may be left out, the URL-safe alphabet
    used, and line breaks are skipped (as Go's decoder skips them)."""
    text = value.replace("\r", "").replace("\n", "").translate(_URL_SAFE)
    try:
        base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise json_format.ParseError(f"{value[:40]!r} at {path.lstrip('.')} is not base64: {exc}") from None


def _oneofs(descriptor: Descriptor, found: dict[Any, tuple[frozenset[str], ...]]) -> None:
    """The JSON names of each oneof's members, by message (AnyValue's value, Metric's data, a
    point's value); a proto3 `optional` is a oneof of one, never given twice."""
    if descriptor in found:
        return
    found[descriptor] = tuple(frozenset(field.json_name for field in oneof.fields)
                              for oneof in descriptor.oneofs if len(oneof.fields) > 1)
    for field in descriptor.fields:
        if field.message_type is not None:
            _oneofs(field.message_type, found)


_ONEOFS: dict[Any, tuple[frozenset[str], ...]] = {}
for _signal in Signal:
    _oneofs(cast(Descriptor, _signal.request_class.DESCRIPTOR), _ONEOFS)
