"""Errors typed by what the caller must do (as the collector's consumererror).

Retrying is the default; anything not permanent may be tried again later.
"""

from __future__ import annotations

from collections.abc import Iterable


class RetryableError(Exception):
    """Try again later; `retry_after` is the delay the other side asked for, in seconds.

    `connection`: the link to the upstream is down (refused, timed out, a proxy's 502/504).
    `unanswered`: nothing answered at all, the connection itself failed (refused, unreachable,
    a name that does not resolve); it implies `connection`. Only then may a TCP connect tell
    that the upstream is back (edgeagent.exporters.reach): something that answered, even a
    proxy, accepts connections while the upstream behind it is still away. None: not known
    (a timeout: a connect that hung, or an upstream that never answered); the exporter's link
    finds out with one connect.

    `timed_out`: the attempt's timeout ended it (the request still going out, or its answer not
    in): on a link that carries little, a smaller request gets through (the export chain halves it).

    `unsent` (serialized request, items), set by the export chain when it delivered some of the
    requests of one export before this failure: the ones still to send, in order; None: all. An
    exporter that delivered part of the request it was given (a failover connector whose level's
    chain sent it in parts) sets it too: the parts of that request it did not deliver."""

    unsent: list[tuple[bytes, int]] | None = None

    def __init__(self, message: str, retry_after: float | None = None, *, connection: bool = False,
                 unanswered: bool | None = False, timed_out: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection or bool(unanswered)  # the peer could not be reached at all
        self.unanswered = unanswered
        self.timed_out = timed_out


def none_answered(errors: Iterable[RetryableError]) -> bool | None:
    """`unanswered` for attempts made at several places at once (fan-out, failover levels): True
    when none of them answered, False when one did, None when that is not known of one of them."""
    states = {error.unanswered for error in errors}
    if False in states:
        return False
    return None if None in states else True


class ThrottledError(RetryableError):
    """The other side asked us to slow down (429, 503 with Retry-After, RESOURCE_EXHAUSTED with RetryInfo)."""


class RefusedError(RetryableError):
    """An exporter without a queue had the data refused for good, and nothing here keeps it: retryable
    for a client that still holds the data (which decides), refused for good for one that cannot
    change it (a Kafka message offered again is refused again)."""


class PermanentError(Exception):
    """Never retry: the data is rejected as it is and goes to the dead-letter store.

    `parts` (serialized request, items) are the refused parts of a request that was split,
    when the rest was delivered; None means the whole request. `too_large`: refused for its size
    (HTTP 413, a gRPC message over the server's maximum), so its halves may be taken."""

    def __init__(self, message: str, status: int | str | None = None, body: bytes = b"",
                 parts: list[tuple[bytes, int]] | None = None, too_large: bool | None = None):
        super().__init__(message)
        self.status = status
        self.body = body
        self.parts = parts
        self.too_large = status == 413 if too_large is None else too_large


class DataRefusedError(RetryableError):
    """The memory limiter refuses new data until memory use falls."""


class QueueFullError(RetryableError):
    """The persistent queue is at its capacity; the client should retry later."""


class ShutdownError(RetryableError):
    """The agent is stopping; the client should retry against the next run."""


class BadRequestError(Exception):
    """The client sent something we cannot accept; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class TooLargeForQueueError(BadRequestError):
    """A request more than its queue holds even when empty (an items- or bytes-sized queue_size):
    it can never be queued whole, however long the client waits (413). Its message says "even when
    empty": over gRPC (RESOURCE_EXHAUSTED) that is how an edgeagent sending to it knows to split."""

    def __init__(self, message: str):
        super().__init__(message, status=413)


class UnauthenticatedError(BadRequestError):
    """The request carries no valid credentials (HTTP 401, gRPC UNAUTHENTICATED); the client must fix them."""

    def __init__(self, message: str = "missing or invalid credentials"):
        super().__init__(message, status=401)


class CorruptRecordError(Exception):
    """A queue record cannot be decoded; it is quarantined and the queue continues."""
