"""The batch key a queue record carries: the values of the batch processor's `metadata_keys`.

Each key's values are kept apart, as otelcol's attribute.Set of them does: a key absent, a key
with one empty value, one value `a;b` and two values `a` and `b` are four different keys. The
encoding starts with 0xFF, a byte UTF-8 never holds, so it never equals a key of the earlier
encoding (the values joined by NUL, as UTF-8) that records written before may still carry;
such records batch on their own until they are sent.
"""

from __future__ import annotations

import struct

MARK = b"\xff"
_LENGTH = struct.Struct(">I")


def encode(values: list[tuple[str, ...]]) -> bytes:
    """The key of one request: for each configured metadata key in order, its values."""
    out = [MARK]
    for each in values:
        out.append(_LENGTH.pack(len(each)))
        for value in each:
            data = value.encode("utf-8", "surrogatepass")
            out += (_LENGTH.pack(len(data)), data)
    return b"".join(out)


def describe(key: bytes) -> str:
    """A key as text for people: each metadata key's values as a list, `[a, b] | []`."""
    if not key.startswith(MARK):
        return key.decode("utf-8", "replace")  # the earlier encoding
    groups: list[str] = []
    offset = len(MARK)
    try:
        while offset < len(key):
            (count,), offset = _LENGTH.unpack_from(key, offset), offset + _LENGTH.size
            values = []
            for _ in range(count):
                (length,), offset = _LENGTH.unpack_from(key, offset), offset + _LENGTH.size
                values.append(key[offset:offset + length].decode("utf-8", "replace"))
                offset += length
            groups.append("[" + ", ".join(values) + "]")
    except struct.error:
        return key.decode("utf-8", "replace")
    return " | ".join(groups)
