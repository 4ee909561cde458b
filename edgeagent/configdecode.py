"""What otelcol's decoder does between YAML and a config struct that pydantic does not do alone.

A whole-value reference (`${env:N}`) gives a key that takes text its text and any other key its
YAML value (confmap's useExpandValue): `value: ${env:N}` with N=5 inserts the number 5, and
`num_consumers: ${env:N}` with N=0x10 is 16. A string given to a list key is split at commas
(mapstructure's StringToSliceHookFunc(","), in confmap's decode hooks): `brokers: ${env:BROKERS}`
with BROKERS=k1:9092,k2:9092 is two brokers, an empty string no item, and no item is trimmed.
An empty reference (null to YAML) given to a number or bool key is null there, which
otel.godecode makes the key's zero, as otelcol does.
Every config model runs this before its fields are validated. pydantic's type errors become
sentences naming the form expected.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationInfo
from pydantic_core import ErrorDetails

from otel.godecode import Refused, decode_scalars, from_document


class Reference(str):
    """A value that was exactly one reference: its text, and in `value` the YAML value it parsed to
    (`${env:N}` with N=0x10 is the text "0x10" and the value 16)."""

    value: Any

    def __new__(cls, text: str, value: Any = None) -> Reference:
        reference = super().__new__(cls, text)
        reference.value = value
        return reference


class ReferenceMap(dict):
    """A map that was exactly one reference, with that reference's text in `text`."""

    text = ""


class ReferenceList(list):
    """A list that was exactly one reference, with that reference's text in `text`."""

    text = ""


def split_comma_lists(model: type[BaseModel], data: Any, info: ValidationInfo) -> Any:
    """`data` for `model`, with references decoded for their fields, scalars read as otelcol reads
    them (otel.godecode) and a string under each key whose field takes only lists split at commas."""
    if not isinstance(data, dict):
        return data
    annotations = _annotations(model)
    data = {key: _decoded(annotations[key], value) if key in annotations else value for key, value in data.items()}
    data = decode_scalars(model, data, from_document(info))
    keys = _list_keys(model)
    if not keys.intersection(data):
        return data
    return {key: (value.split(",") if value else []) if key in keys and isinstance(value, str) else value
            for key, value in data.items()}


def _decoded(annotation: Any, value: Any) -> Any:
    """`value` with each Reference as its text where `annotation` takes text, else as its YAML value;
    an empty one (null to YAML) is null to a number or bool key, its zero (otelcol's useExpandValue)."""
    if isinstance(value, Reference):
        if value.value is None and _all_members(annotation, lambda member: member in (int, float, bool)):
            return None
        return value.value if not _takes_text(annotation) and value.value is not None else str(value)
    if isinstance(value, (ReferenceMap, ReferenceList)) and _takes_only_text(annotation):
        return value.text
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _decoded(typing.get_args(annotation)[0], value)
    if annotation is Any:
        return _values(value)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _decoded(members[0], value) if len(members) == 1 else value
    args = typing.get_args(annotation)
    if origin is list and isinstance(value, list) and args:
        return [_decoded(args[0], item) for item in value]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {key: _decoded(args[1], item) for key, item in value.items()}
    return value


def _values(value: Any) -> Any:
    """Every Reference in a value of any type as its YAML value (null stays the text, "" or "~")."""
    if isinstance(value, Reference):
        return str(value) if value.value is None else value.value
    if isinstance(value, list):
        return [_values(item) for item in value]
    if isinstance(value, dict):
        return {key: _values(item) for key, item in value.items()}
    return value


def _takes_text(annotation: Any) -> bool:
    """str, a Literal of strings, or a union with one of them: the text is what such a key reads."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_text(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_takes_text(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return any(isinstance(arg, str) for arg in typing.get_args(annotation))
    return annotation is str


def _takes_only_text(annotation: Any) -> bool:
    """A text key that takes no map or list (a password `{s3cret}` is its text there)."""
    return _all_members(annotation, _takes_text)


def _all_members(annotation: Any, test: Callable[[Any], bool]) -> bool:
    """`test` of a type, of the type Annotated wraps, or of every member of a union but None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _all_members(typing.get_args(annotation)[0], test)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return bool(members) and all(_all_members(member, test) for member in members)
    return test(annotation)


@functools.cache
def _annotations(model: type[BaseModel]) -> dict[str, Any]:
    """Each key a model takes (its field names and aliases) and the field's type."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        out[name] = field.annotation
        if field.alias:
            out[field.alias] = field.annotation
    return out


@functools.cache
def _list_keys(model: type[BaseModel]) -> frozenset[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        if _only_lists(field.annotation):
            keys.update({name, field.alias} - {None})  # type: ignore[arg-type]
    return frozenset(keys)


def _only_lists(annotation: Any) -> bool:
    """A list type, or a union of list types and None: a string has no other reading there."""
    return _all_members(annotation, lambda member: member is list or typing.get_origin(member) is list)


_EXPECTED = {
    "list_type": "a list such as [a, b] or the text a,b",
    "int_type": "a whole number such as 10", "int_parsing": "a whole number such as 10",
    "int_from_float": "a whole number such as 10",
    "float_type": "a number such as 0.5", "float_parsing": "a number such as 0.5",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "text", "dict_type": "a mapping of keys to values", "model_type": "a mapping of settings",
}


def type_error_sentence(error: ErrorDetails) -> str | None:
    """`expected true or false; got text` for a pydantic type error, None for any other error."""
    if isinstance(error.get("input"), Refused):
        return error["input"].sentence
    expected = _EXPECTED.get(error["type"])
    if expected is None:
        return None
    return f"expected {expected}; got {_yaml_kind(error.get('input'))}"


def _yaml_kind(value: Any) -> str:
    """What the YAML held, never the value itself (it may be a secret)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
