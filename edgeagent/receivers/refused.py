"""The items of a request the memory limiter refuses, counted as otelcol counts them.

otelcol's memory limiter refuses a request its receiver has parsed: the receiver counts the
request's items in `otelcol_receiver_refused_*` and the limiter in
`otelcol_processor_memory_limiter_refused_*`, the series otelcol's alerts on refused data watch.
Here the limiter refuses before a body is read, to spend no memory on it. A small body (up to
COUNTED_BYTES, as received and decoded) is still read, and its items are counted on its bytes (a
walk, no parse; a JSON body, up to COUNTED_JSON_BYTES, is parsed), then dropped; the answer is the
same refusal. At most BUDGET_BYTES of such bodies are read at once. A larger body, one over that
budget, or one that does not arrive within READ_SECONDS, is refused unread, its items uncounted
(the request is counted in `edgeagent_receiver_refused_requests`). A Kafka message, in memory
already, is counted at each offer the limiter refuses, as otelcol's Kafka receiver counts it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from edgeagent.errors import BadRequestError, DataRefusedError
from edgeagent.receivers import codec
from edgeagent.signals import Signal
from otel.cut import cut
from otel.wire import WireError

COUNTED_BYTES = 256 << 10  # an SDK's usual request (512 spans) is well below
COUNTED_JSON_BYTES = 64 << 10  # a parse of JSON takes ~16 times its size
READ_SECONDS = 5.0  # the longest a refused body is waited for (unless read_timeout is shorter)
BUDGET_BYTES = 8 << 20  # of refused bodies being read at once, by every receiver: the rest go uncounted
_taken = 0


@contextlib.contextmanager
def budget(size: int) -> Iterator[bool]:
    """Whether a refused body of up to `size` bytes may be read to be counted now (within BUDGET_BYTES
    of them at once: memory is short when they come), held until the block ends."""
    global _taken
    if _taken + size > BUDGET_BYTES:
        yield False
        return
    _taken += size
    try:
        yield True
    finally:
        _taken -= size


def items(signal: Signal, body: bytes, content_type: str) -> int:
    """The items of `body` as otelcol counts them (spans, data points, log records); 0 for a body
    that is not a request of `signal` (otelcol answers it 400 and counts nothing)."""
    if content_type == codec.JSON:
        if len(body) > COUNTED_JSON_BYTES:
            return 0
        try:
            return codec.decode(signal, body, content_type).items
        except BadRequestError:
            return 0
    try:
        return sum(count for _, count in cut(body, 1 << 62, metrics=signal is Signal.METRICS))
    except (WireError, IndexError, ValueError):
        return 0


class Consumer(Protocol):
    def refusal(self, transport: str) -> tuple[str, DataRefusedError] | None: ...

    def count_refused(self, transport: str, items: int, limiter_id: str) -> None: ...


def check(consumer: Consumer, transport: str, signal: Signal, body: bytes, content_type: str) -> None:
    """Raise the refusal of a memory limiter that refuses now, with the items of `body` (already in
    memory: a Kafka message) counted when it is small enough."""
    if (refusal := consumer.refusal(transport)) is not None:
        consumer.count_refused(transport, items(signal, body, content_type) if len(body) <= COUNTED_BYTES else 0,
                               refusal[0])
        raise refusal[1]


def within(size: int) -> None:
    """Stop reading a refused body once it holds more than can be counted."""
    if size > COUNTED_BYTES:
        raise BadRequestError(f"a refused body is counted up to {COUNTED_BYTES} bytes", status=413)
