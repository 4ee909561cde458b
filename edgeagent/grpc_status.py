"""gRPC status codes, and what gRPC makes of an HTTP/2 answer that carries none.

Our own table, so that neither the receiver nor the exporter needs the grpcio library: the
agent speaks gRPC over its own HTTP/2 stack (`receivers/grpc_server.py`, `exporters/grpc_client.py`).
"""

from __future__ import annotations

import enum


class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def name_of(code: int) -> str:
    """The status name of a code, UNKNOWN for a number gRPC does not define."""
    try:
        return StatusCode(code).name
    except ValueError:
        return StatusCode.UNKNOWN.name


# gRPC's "HTTP to gRPC Status Code Mapping": an HTTP status without grpc-status
_FROM_HTTP = {400: StatusCode.INTERNAL, 401: StatusCode.UNAUTHENTICATED, 403: StatusCode.PERMISSION_DENIED,
              404: StatusCode.UNIMPLEMENTED, 429: StatusCode.UNAVAILABLE, 502: StatusCode.UNAVAILABLE,
              503: StatusCode.UNAVAILABLE, 504: StatusCode.UNAVAILABLE}

# grpc-go's mapping of an HTTP/2 RST_STREAM error code (http2ErrConvTab)
_FROM_RESET = {0x7: StatusCode.UNAVAILABLE,  # REFUSED_STREAM: the server did not process the call
               0x8: StatusCode.CANCELLED, 0xB: StatusCode.RESOURCE_EXHAUSTED,  # ENHANCE_YOUR_CALM
               0xC: StatusCode.PERMISSION_DENIED}  # INADEQUATE_SECURITY


def from_http(status: int) -> StatusCode:
    return _FROM_HTTP.get(status, StatusCode.UNKNOWN)


def from_reset(error_code: int) -> StatusCode:
    return _FROM_RESET.get(error_code, StatusCode.INTERNAL)
