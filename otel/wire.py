"""The protobuf wire format, as far as moving OTLP bytes without building messages needs.

A message is a run of fields, each a varint key (field number << 3 | wire type) and a value:
a varint (type 0), 8 bytes (1), a varint length and that many bytes (2: strings, bytes,
sub-messages, packed repeated fields), or 4 bytes (5). Groups (3, 4) are deprecated and OTLP
has none: they are refused. Repeated sub-messages are one field per element, so serialized
messages of one type concatenate into one holding all their elements.
"""

from __future__ import annotations

LEN = 2
_ONE_BYTE = [bytes((value,)) for value in range(0x80)]


class WireError(ValueError):
    """The bytes are not a protobuf message this module can walk."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it)."""
    result = shift = 0
    while shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise WireError("varint longer than 10 bytes")


def field_at(data: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """(field number, `pos`, start of its value, end of the field) of the field at `pos`, which
    must end by `end`; for a length-delimited field the value is its payload."""
    try:
        key, value_start = read_varint(data, pos)
        wire = key & 7
        if wire == LEN:
            length, value_start = read_varint(data, value_start)
            value_end = value_start + length
        elif wire == 0:
            value_end = read_varint(data, value_start)[1]
        elif wire == 1:
            value_end = value_start + 8
        elif wire == 5:
            value_end = value_start + 4
        else:
            raise WireError(f"wire type {wire}")
    except IndexError:
        raise WireError("truncated") from None
    if value_end > end:
        raise WireError("a field runs past its message")
    return key >> 3, pos, value_start, value_end


def fields(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """`field_at` for each field of data[start:end], in order."""
    out = []
    pos = start
    while pos < end:
        field = field_at(data, pos, end)
        out.append(field)
        pos = field[3]
    return out


def varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field: key, length, payload."""
    return varint(number << 3 | LEN) + varint(len(payload)) + payload
