"""The answer a receiver gives for data its upstream refused for good (wait_for_result).

As otelcol's OTLP receiver: the upstream's own status when it gave one (an OTLP/HTTP status is
first mapped to its gRPC code, as otelcol's statusutil does), else INTERNAL; over HTTP the gRPC
code maps to the status otelcol answers for it. The receivers' one mapping functions
(`grpc_status`, `error_response`) call this for a PermanentError.
"""

from __future__ import annotations

from edgeagent.errors import PermanentError

INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = (
    3, 7, 8, 12, 13, 14, 16)
UNKNOWN = 2
_FROM_HTTP = {400: INVALID_ARGUMENT, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: UNIMPLEMENTED,
              429: RESOURCE_EXHAUSTED, 502: UNAVAILABLE, 503: UNAVAILABLE, 504: UNAVAILABLE}
_NAMES = {"CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
          "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
          "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
          "DATA_LOSS": 15, "UNAUTHENTICATED": 16}
_TO_HTTP = {1: 503, 4: 503, 10: 503, 11: 503, 14: 503, 15: 503, 8: 429, 3: 400, 16: 401, 7: 403, 12: 404}


def grpc_code(error: PermanentError) -> int:
    """The gRPC status code (its number) of a refusal for good."""
    status = error.status
    if isinstance(status, int):
        return _FROM_HTTP.get(status, UNKNOWN)
    if isinstance(status, str):
        return _NAMES.get(status, INTERNAL)  # a name that is no gRPC code (a Kafka error): server-side
    return INTERNAL


def http_status(error: PermanentError) -> int:
    """The HTTP status of a refusal for good."""
    return _TO_HTTP.get(grpc_code(error), 500)
