"""OTLP encodings for receivers: protobuf and the OTLP/JSON mapping, compression, size limits.

OTLP/JSON differs from protobuf's generic JSON mapping in one important way: trace and
span ids are hex strings, not base64. Enum values may be integers or names; both parse.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import zstandard
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from edgeagent.errors import BadRequestError
from edgeagent.signals import Payload, Signal

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_CHUNK = 64 * 1024


def metadata_of(pairs: Any) -> dict[str, str]:
    """Request metadata with lowercased keys; repeated keys are joined with ';' as otelcol does."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(value, str):
            continue  # binary gRPC metadata
        key = key.lower()
        out[key] = f"{out[key]};{value}" if key in out else value
    return out


def decode(signal: Signal, body: bytes, content_type: str, metadata: dict[str, str] | None = None,
           client_address: str = "") -> Payload:
    """Parse a request body into a payload; raises BadRequestError(400) for malformed data."""
    payload = _decode(signal, body, content_type, metadata)
    payload.client_address = client_address
    return payload


def _decode(signal: Signal, body: bytes, content_type: str, metadata: dict[str, str] | None) -> Payload:
    if content_type == PROTOBUF:
        try:
            return Payload.from_bytes(signal, body, metadata)
        except (DecodeError, ValueError) as exc:
            raise BadRequestError(f"request body is not a valid {signal.request_class.__name__} protobuf: {exc}") from exc
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequestError("request body must be a JSON object")
    try:
        _hex_ids_to_base64(document)
        message = json_format.ParseDict(document, signal.request_class(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise BadRequestError(f"request body is not valid OTLP/JSON for {signal.label}: {exc}") from exc
    return Payload.from_message(signal, message, metadata)


def encode_response(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return json.dumps(json_format.MessageToDict(message)).encode()
    return message.SerializeToString()


def to_otlp_json(message: Message, integer_enums: bool = False) -> dict[str, Any]:
    """A message in the OTLP/JSON mapping: camelCase keys, hex trace and span ids (enum values as
    integers, as the OTLP specification asks, with `integer_enums`)."""
    document = json_format.MessageToDict(message, use_integers_for_enums=integer_enums)
    _base64_ids_to_hex(document)
    return document


def _base64_ids_to_hex(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            elif isinstance(value, (dict, list)):
                _base64_ids_to_hex(value)
    elif isinstance(node, list):
        for value in node:
            _base64_ids_to_hex(value)


def _hex_ids_to_base64(node: Any) -> None:
    """Rewrite OTLP/JSON hex ids in place to the base64 that protobuf's JSON parser expects."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = _hex_to_base64(key, value)
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)


def _hex_to_base64(key: str, value: str) -> str:
    if value == "":
        return ""
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise ValueError(f"{key} {value!r} is not a hex string") from exc
    expected = 8 if "span" in key.lower() else 16
    if len(raw) != expected:
        raise ValueError(f"{key} must be {expected} bytes ({expected * 2} hex digits), got {len(raw)}")
    return base64.b64encode(raw).decode()


class Decompressor:
    """Streaming decompression with a hard limit on the decompressed size (decompression bombs)."""

    SUPPORTED = ("gzip", "x-gzip", "deflate", "zstd", "identity", "")

    def __init__(self, encoding: str, limit: int):
        self.limit = limit
        self.size = 0
        encoding = encoding.strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()  # zlib-wrapped, as HTTP's deflate; raw deflate retried below
        elif encoding == "zstd":
            self._z = zstandard.ZstdDecompressor().decompressobj()
        elif encoding in ("identity", ""):
            self._z = None
        else:
            raise BadRequestError(f"unsupported Content-Encoding {encoding!r}; use gzip, zstd, deflate or none", status=415)
        self.encoding = encoding
        self._parts: list[bytes] = []
        self._started = False

    def feed(self, chunk: bytes) -> None:
        if self._z is None:
            self._add(chunk)
            return
        try:
            if self.encoding == "deflate" and not self._started:
                self._started = True
                try:
                    out = self._z.decompress(chunk, self._room())
                except zlib.error:
                    self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                    out = self._z.decompress(chunk, self._room())
            elif self.encoding == "zstd":
                out = self._z.decompress(chunk)
            else:
                out = self._z.decompress(chunk, self._room())
            self._add(out)
            # zlib keeps input it could not expand within the limit: anything left means too large
            while getattr(self._z, "unconsumed_tail", b""):
                out = self._z.decompress(self._z.unconsumed_tail, self._room())
                if not out:
                    break
                self._add(out)
        except (zlib.error, zstandard.ZstdError) as exc:
            raise BadRequestError(f"request body is not valid {self.encoding} data: {exc}") from exc

    def _room(self) -> int:
        return self.limit - self.size + 1

    def _add(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self.limit:
            raise BadRequestError(f"request body exceeds the limit of {self.limit} bytes once decompressed", status=413)
        self._parts.append(data)

    def finish(self) -> bytes:
        if self._z is not None and self.encoding != "zstd":
            try:
                self._add(self._z.flush())
            except zlib.error as exc:
                raise BadRequestError(f"request body is not valid {self.encoding} data: {exc}") from exc
            if self.encoding in ("gzip", "x-gzip") and not self._z.eof:
                raise BadRequestError("request body is a truncated gzip stream")
        return b"".join(self._parts)


