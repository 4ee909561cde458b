"""What parsing a request body may cost in memory, bounded before it is parsed; and the parse itself.

A body's size says little about what it becomes: an empty ResourceSpans is 2 bytes on the wire
and 64 bytes of protobuf arena, an empty Span 177 (upb, measured), an empty JSON object 3 bytes
and a dict plus a message. So before a body is parsed, what the memory limiter reserved for it
(EXPANSION per byte) is raised to a bound of what parsing it can take (`admit`):

- `worst_case`, at C speed: every sub-message starts with the tag byte of one of the signal's
  message fields, so counting those bytes bounds the number of messages (JSON: every object or
  array starts with `{` or `[`). Sound, but loose for text-heavy bodies, whose strings hold such
  bytes too (an ordinary 512-span body: 26 bytes per body byte);
- before both, while memory allows it, a small body is reserved for at `ceiling_cost` (a message
  every two bytes), which needs no pass over it;
- when that does not fit the budget, `message_cost`: a walk of the protobuf wire that counts the
  messages there are (8 bytes per body byte for the same body), stopped once over the limit.

A body that does not fit is refused before it is parsed: retryable while memory is short, 400
when it could never fit. Large bodies are walked and parsed on a worker thread, so that the event
loop keeps serving other clients meanwhile.

The PARSE_THREADS threads are started with the first large body, before it is handed over. A
thread that cannot be started (a pids limit, RLIMIT_NPROC) refuses the request as retryable
(503, UNAVAILABLE) and is tried again with the next one. A ThreadPoolExecutor queued the work
before it started its thread: the request got a 500, which OTLP clients do not retry, and its
body stayed queued, to be parsed whenever a thread started, outside the memory limiter's budget.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from edgeagent.errors import BadRequestError, RetryableError
from edgeagent.futures import settle
from edgeagent.receivers import codec, deprecated
from edgeagent.signals import Payload, Signal
from otel.wire import read_varint

if TYPE_CHECKING:
    import queue

    from google.protobuf.descriptor import Descriptor  # protobuf comes with the first request (signals.py)

MESSAGE_COST = 192  # arena bytes of the largest empty OTLP message (a Span: 177) with its slot in a list
JSON_CONTAINER_COST = 96  # a Python dict or list (64 or 56 bytes) and its slot in its parent
JSON_VALUE_EXPANSION = 16  # the most a JSON scalar or key grows per body byte in Python (`"ab",`: 5 -> 59)
BODY_COPIES = 2  # the body as received, and once more serialized when a processor changes it
# a protobuf body whose ceiling_cost is within this share of the room left below the soft limit is
# reserved for at that, not counted: the count (a pass over the body) costs 0.4 ns a byte. A small
# share, so that a few requests at a time take the ceiling, and never so many that the rest, counted,
# find no room
NO_SCAN_SHARE = 16
OFF_LOOP_BYTES = 256 << 10  # bodies from this size are walked and parsed on a worker thread
PARSE_THREADS = 2  # their own threads: hostile bodies never hold up the queue's and exporters' work
_T = TypeVar("_T")
_PARSERS: _Parsers | None = None
Plan = dict[int, tuple[int, "Plan"]]  # message field number -> (cost of one such message, its own plan)


class Reservation(Protocol):
    """A request's place in the memory limiters' budget (processors/memory_limiter.py)."""

    @property
    def limit(self) -> int: ...

    @property
    def room(self) -> int: ...

    def cover(self, cost: int, quiet: bool = False) -> None: ...


def _plan(descriptor: Descriptor, plans: dict[str, Plan]) -> Plan:
    """The message fields of `descriptor`, each with what one message of it costs at most in upb's
    arena: 16 bytes a field (a string view; numbers and pointers take 8), a header and hasbits,
    and its slot in a list that doubles as it grows."""
    if descriptor.full_name in plans:
        return plans[descriptor.full_name]
    plan: Plan = {}
    plans[descriptor.full_name] = plan
    for field in descriptor.fields:
        if field.type == field.TYPE_MESSAGE and (sub := field.message_type) is not None:
            plan[field.number] = (min(MESSAGE_COST, 16 * len(sub.fields) + 32), _plan(sub, plans))
    return plan


def _tag_bytes(plan: Plan, seen: set[int]) -> set[int]:
    """The first byte of the tag of every message field reachable from `plan`."""
    if id(plan) in seen:
        return set()
    seen.add(id(plan))
    tags: set[int] = set()
    for number, (_, sub) in plan.items():
        key = number << 3 | 2
        tags.add(key if key < 0x80 else key & 0x7F | 0x80)
        tags |= _tag_bytes(sub, seen)
    return tags


def _with_deprecated_scopes(plan: Plan) -> Plan:
    """A request's plan in which a resource's field 1000 costs as its scope field: decoding moves
    OTLP's deprecated instrumentation_library_* there (deprecated.py) and parses every message."""
    resource = plan[1][1]
    resource[deprecated.DEPRECATED] = resource[deprecated.SCOPES]
    return plan


# a signal's plan, and the bytes that start no message field's tag: made with its first request (walking
# the descriptors cost every start 1 ms); made twice by two threads at once, the same either way
_PLANS: dict[Signal, tuple[Plan, bytes]] = {}


def _plan_of(signal: Signal) -> tuple[Plan, bytes]:
    made = _PLANS.get(signal)
    if made is None:
        plan = _with_deprecated_scopes(_plan(cast("Descriptor", signal.request_class.DESCRIPTOR), {}))
        made = _PLANS[signal] = (plan, bytes(sorted(set(range(256)) - _tag_bytes(plan, set()))))
    return made


def worst_case(signal: Signal, body: bytes, content_type: str) -> int:
    """Bytes of memory that parsing `body` and holding the result can take at most (C speed)."""
    if content_type == codec.JSON:
        containers = body.count(b"{") + body.count(b"[")
        return len(body) * JSON_VALUE_EXPANSION + containers * (JSON_CONTAINER_COST + MESSAGE_COST)
    messages = len(body.translate(None, _plan_of(signal)[1]))  # bytes that may start a sub-message
    return len(body) * BODY_COPIES + messages * MESSAGE_COST


def ceiling_cost(body: bytes) -> int:
    """As `worst_case`, without reading the body: a sub-message takes two bytes at least (its tag
    and its length), so there are at most half as many as the body has bytes, and the request."""
    return len(body) * BODY_COPIES + (len(body) // 2 + 1) * MESSAGE_COST


def message_cost(signal: Signal, body: bytes, limit: int) -> int:
    """As `worst_case` for a protobuf body, from the messages it holds: more than `limit` once over it.
    Malformed wire data ends the walk with what came before it, as far as the parse goes too."""
    return len(body) * BODY_COPIES + _walk(body, 0, len(body), _plan_of(signal)[0], limit)


def _walk(data: bytes, pos: int, end: int, plan: Plan, limit: int) -> int:
    """Arena bytes of the messages in data[pos:end], a message whose fields `plan` describes."""
    cost = 0
    try:
        while pos < end:
            key = data[pos]  # one byte for every OTLP field: the common case inline
            key, pos = (key, pos + 1) if key < 0x80 else read_varint(data, pos)
            wire = key & 7
            if wire == 2:
                length = data[pos]
                length, pos = (length, pos + 1) if length < 0x80 else read_varint(data, pos)
                sub = plan.get(key >> 3)
                if sub is not None:
                    cost += sub[0]
                    if sub[1] and length:
                        cost += _walk(data, pos, min(pos + length, end), sub[1], limit - cost)
                    if cost > limit:
                        return cost
                pos += length
            elif wire == 0:
                pos = read_varint(data, pos)[1]
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                return cost  # not OTLP: the parse stops here too
    except (IndexError, ValueError):
        pass  # truncated or malformed: so is the parse, at this point
    return cost


async def admit(reservation: Reservation, signal: Signal, body: bytes, content_type: str) -> None:
    """Raise the reservation to what parsing `body` can cost; raises RetryableError (memory is short
    now) or BadRequestError (it could never fit)."""
    if not reservation.limit:
        return  # no memory limiter in the request's pipelines
    if content_type != codec.JSON:
        ceiling = ceiling_cost(body)
        if ceiling <= reservation.room // NO_SCAN_SHARE:
            try:
                reservation.cover(ceiling, quiet=True)
                return  # room for the most it could be: no need to count (most requests, most of the time)
            except (RetryableError, BadRequestError):
                pass  # memory is short for that now: bound it closer
    bound = worst_case(signal, body, content_type)
    if content_type == codec.JSON:
        reservation.cover(bound)
        return
    try:
        reservation.cover(bound, quiet=True)
        return
    except (RetryableError, BadRequestError):
        pass  # the quick bound does not fit: count the messages there are
    limit = min(bound, reservation.limit)  # a walk never finds more than the quick bound
    reservation.cover(await _off_loop(len(body), message_cost, signal, body, limit))


async def decode(signal: Signal, body: bytes, content_type: str, metadata: dict[str, str] | None,
                 client_address: str) -> Payload:
    """codec.decode, on a worker thread for a large body."""
    return await _off_loop(len(body), codec.decode, signal, body, content_type, metadata, client_address)


async def _off_loop(size: int, function: Callable[..., _T], *args: object) -> _T:
    """function(*args), on a worker thread when `size` is large. A caller cancelled meanwhile (the
    client went away, the server stopping) still waits for the thread, however often it is
    cancelled: the memory the parse uses stays reserved until it ends."""
    global _PARSERS
    if size < OFF_LOOP_BYTES:
        return function(*args)
    if _PARSERS is None:
        _PARSERS = _Parsers()
    work = _PARSERS.submit(function, *args)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():  # each turn waits for the thread; only another cancel ends one early
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                continue
        raise


class _Parsers:
    """PARSE_THREADS daemon threads taking work from one queue; work is queued only once one runs."""

    def __init__(self) -> None:
        import queue  # with the first large body, as its threads

        self._work: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any],
                                            tuple[object, ...]]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, function: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        """A future of function(*args) run on one of the threads; RetryableError when none runs."""
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._work.put((loop, future, function, args))
        return future

    def _start(self) -> None:
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        try:
            while len(self._threads) < PARSE_THREADS:
                thread = threading.Thread(target=self._run, name=f"parse_{len(self._threads)}", daemon=True)
                thread.start()  # RuntimeError when the process may start no thread
                self._threads.append(thread)
        except RuntimeError as exc:
            if not self._threads:
                raise RetryableError(f"no thread could be started to parse the request ({exc}); try again",
                                     retry_after=1.0) from exc

    def _run(self) -> None:
        while True:
            _parse(*self._work.get())  # its body and result go with it, not held through the next wait


def _parse(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], function: Callable[..., Any],
           args: tuple[object, ...]) -> None:
    try:
        result, error = function(*args), None
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
        result, error = None, exc
    try:
        loop.call_soon_threadsafe(settle, future, result, error)
    except RuntimeError:  # the loop closed meanwhile: nobody waits
        pass

