"""Scalar config values read as otelcol reads them: confmap's decoder over mapstructure (its
decodeInt, decodeUint and DecodeNil), with no weak typing.

* Nothing under a key (`num_traces:`, `~`) sets a number, bool, duration or text setting to its
  zero (0, false, 0s, ""), as mapstructure decodes the zero of a Go field's type, also where
  edgeagent's model tells "not written" (None) from 0: `keepalive::max_idle_conns:` is 0, no limit,
  not the default of 100. A list or a mapping keeps its default (confmap's zeroSliceAndMapHookFunc),
  and so does text that may be None (an endpoint, a file): None is its "unset", as "" is otelcol's.
* A fraction for a whole number is truncated toward zero (Go's `int64(1.5)` is 1, `int64(-2.7)` -2).
* A whole number beyond its setting's Go type is refused, naming the range: otelcol would wrap it
  around (`1099511627776` into a uint32 is 0), or refuse it when negative for an unsigned type.
  A setting is Go's int (64 bits) unless its type says otherwise (`Uint32`, `Int32`, `Uint64`).
* A bare number for a duration is nanoseconds (a Go time.Duration counts nanoseconds, and confmap
  reads only text as "5s"); `5000000000` is 5s, `1.5` is 1ns. This holds for a config document,
  validated with `DOCUMENT` as its context; a model built in code takes a number as seconds.

A quoted number (`"100"`) or bool (`"true"`) stays accepted as what it spells: otelcol refuses
both, so accepting them changes the meaning of no config it runs.
"""

from __future__ import annotations

import functools
import logging
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ValidationInfo
from pydantic.fields import FieldInfo

from otel.durations import parse_duration

log = logging.getLogger(__name__)
_LIKELY_SECONDS = 1_000_000  # a bare duration under a millisecond


@dataclass(frozen=True)
class GoInt:
    """The Go integer type of a setting, which bounds the numbers it takes."""

    bits: int = 64
    signed: bool = True

    def __str__(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    @property
    def low(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def high(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


DOCUMENT: dict[str, bool] = {"config_document": True}
"""The validation context of a config document (`model_validate(data, context=DOCUMENT)`)."""

Int32 = Annotated[int, GoInt(32)]
Int64 = Annotated[int, GoInt(64)]
Uint32 = Annotated[int, GoInt(32, signed=False)]
Uint64 = Annotated[int, GoInt(64, signed=False)]
_GO_INT = GoInt()


class Refused:
    """A value that fails its setting's type, carrying the sentence that says why and what to write."""

    def __init__(self, sentence: str):
        self.sentence = sentence

    def __repr__(self) -> str:
        return self.sentence


@dataclass(frozen=True)
class _Setting:
    """How one field's scalars are decoded from a document (see `_kind`)."""

    kind: str  # "int", "float", "bool", "str", "duration", "keep" (a null keeps the default) or "other"
    optional: bool
    go_int: GoInt = _GO_INT


def from_document(info: ValidationInfo) -> bool:
    """Whether the model is being validated from a config document (see DOCUMENT)."""
    return isinstance(info.context, dict) and bool(info.context.get("config_document"))


def decode_scalars(model: type[BaseModel], data: Any, document: bool) -> Any:
    """`data` for `model` with each scalar value as otelcol's decoder reads it (see the module's
    note); `document`: `data` is from a config document, where a bare duration is nanoseconds."""
    if not isinstance(data, dict):
        return data
    settings = _settings(model)
    out = {}
    for key, value in data.items():
        setting = settings.get(key)
        if setting is None:
            out[key] = value
        elif value is None:
            if setting.kind == "keep" or (setting.optional and setting.kind == "str"):
                continue  # the default stays
            out[key] = _ZERO.get(setting.kind, value)
        else:
            out[key] = _scalar(key, setting, value, document)
    return out


_ZERO: dict[str, object] = {"int": 0, "float": 0.0, "bool": False, "str": "", "duration": 0.0}


def _scalar(key: str, setting: _Setting, value: Any, document: bool) -> Any:
    if isinstance(value, bool) or setting.kind not in ("int", "duration"):
        return value
    if setting.kind == "duration":
        return _nanoseconds(key, value) if document and isinstance(value, (int, float)) else value
    whole = _whole(value)
    if whole is None:
        return value
    if isinstance(whole, Refused):
        return whole
    limits = setting.go_int
    if not limits.low <= whole <= limits.high:
        return Refused(f"must be from {limits.low} to {limits.high}, the range of otelcol's {limits} (it would "
                       f"wrap a number beyond it around); write a number in that range")
    return whole


def _whole(value: Any) -> int | Refused | None:
    """The whole number otelcol reads from a number (a fraction truncated), or from text spelling a
    whole number; None for anything else, left to the setting's own check."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return Refused("expected a whole number such as 10; got a number that is not finite")
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _nanoseconds(key: str, value: float) -> float | Refused:
    """Seconds for a bare number of nanoseconds, truncated to whole nanoseconds as Go's int64().
    Under a millisecond it is most likely meant as seconds (`timeout: 30`): said once per load."""
    if not math.isfinite(value) or not _GO_INT.low <= value <= _GO_INT.high:
        return Refused(f"expected a duration such as 200ms, 10s or 5m; got a number of nanoseconds ({value}) "
                       f"beyond what a duration holds")
    if 0 < value < _LIKELY_SECONDS:
        log.warning("`%s: %s` is read as %dns, as otelcol reads a bare number; write %ss if seconds are meant",
                    key, value, int(value), value, extra={"key": key, "value": value})
    return int(value) / 1e9


@functools.cache
def _settings(model: type[BaseModel]) -> dict[str, _Setting]:
    """How each key of a model (by field name and alias) decodes."""
    out: dict[str, _Setting] = {}
    for name, field in model.model_fields.items():
        setting = _setting(field)
        out[name] = setting
        if field.alias:
            out[field.alias] = setting
    return out


def _setting(field: FieldInfo) -> _Setting:
    annotation, metadata = field.annotation, list(field.metadata)
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            return _Setting("other", optional)
        annotation = members[0]
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *more = typing.get_args(annotation)
        metadata += more
    return _Setting(_kind(annotation, metadata), optional,
                    next((item for item in metadata if isinstance(item, GoInt)), _GO_INT))


def _kind(annotation: Any, metadata: list[Any]) -> str:
    if any(getattr(item, "func", None) is parse_duration for item in metadata):
        return "duration"
    if annotation in (int, float, bool, str):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    if origin is typing.Literal and all(isinstance(arg, str) for arg in typing.get_args(annotation)):
        return "str"
    if origin in (list, dict) or annotation in (list, dict):
        return "keep"
    return "other"
