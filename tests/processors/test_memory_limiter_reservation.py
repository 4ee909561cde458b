"""A request's reservation raised to what parsing its body can take (Reservation.cover): refused
retryably while memory is short, with a 400 when it could never fit, and never left half taken.
The limiter is the real one; its memory reading is set by the test."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from edgeagent.errors import BadRequestError, DataRefusedError
from edgeagent.processors.memory_limiter import EXPANSION, MemoryLimiter, MemoryLimiterConfig, Reservation
from edgeagent.receivers import codec, parse_cost
from edgeagent.signals import Signal
from otel.wire import length_delimited
from tests.helpers import bodies

MIB = 1 << 20


def _limiter(used_mib: int, limit_mib: int = 100, spike_mib: int = 20) -> MemoryLimiter:
    limiter = MemoryLimiter("memory_limiter", MemoryLimiterConfig(limit_mib=limit_mib, spike_limit_mib=spike_mib,
                                                                  check_interval=1.0), host=None)
    limiter.used = used_mib * MIB
    return limiter


def _reservation(limiter: MemoryLimiter) -> tuple[Reservation, list[DataRefusedError]]:
    refusals: list[DataRefusedError] = []
    return Reservation([limiter], refusals.append), refusals


def test_cost_above_the_hard_limit_is_a_bad_request_and_takes_nothing() -> None:
    limiter = _limiter(used_mib=10)
    reservation, refusals = _reservation(limiter)
    reservation.grow(1 * MIB)
    with pytest.raises(BadRequestError) as caught:
        reservation.cover(101 * MIB)
    assert caught.value.status == 400 and "memory limit of 100 MiB" in str(caught.value)
    assert limiter.in_flight == EXPANSION * MIB
    reservation.release()
    assert limiter.in_flight == 0


def test_cost_that_does_not_fit_beside_others_is_refused_retryably_and_counted_unless_quiet() -> None:
    limiter = _limiter(used_mib=10)  # soft limit 80 MiB
    other, _ = _reservation(limiter)
    other.grow(5 * MIB)  # 30 MiB in flight
    reservation, refusals = _reservation(limiter)
    with pytest.raises(DataRefusedError):
        reservation.cover(50 * MIB, quiet=True)
    assert not refusals and limiter.in_flight == 30 * MIB
    with pytest.raises(DataRefusedError):
        reservation.cover(50 * MIB)
    assert len(refusals) == 1 and limiter.in_flight == 30 * MIB


def test_lone_request_may_take_up_to_the_hard_limit() -> None:
    limiter = _limiter(used_mib=10)
    reservation, refusals = _reservation(limiter)
    reservation.grow(2 * MIB)
    reservation.cover(85 * MIB)  # past the soft limit (80), under the hard (100): nobody else in flight
    assert limiter.in_flight == 85 * MIB and not refusals
    reservation.cover(12 * MIB)  # already covered: nothing more
    assert limiter.in_flight == 85 * MIB


def test_ordinary_body_whose_quick_bound_does_not_fit_is_admitted_on_its_messages() -> None:
    body = b"".join([bodies.ordinary_traces()] * 20)  # 3.6 MiB of ordinary spans
    quick = parse_cost.worst_case(Signal.TRACES, body, codec.PROTOBUF)
    walked = parse_cost.message_cost(Signal.TRACES, body, 1 << 40)
    limiter = _limiter(used_mib=10, limit_mib=10 + (quick + walked) // 2 // MIB)
    reservation, refusals = _reservation(limiter)
    reservation.grow(len(body))
    asyncio.run(parse_cost.admit(reservation, Signal.TRACES, body, codec.PROTOBUF))
    assert limiter.in_flight == walked and not refusals


def test_flood_is_refused_before_it_is_parsed() -> None:
    body = length_delimited(1, length_delimited(2, b"\x12\x00" * 500_000))  # 1 MiB of empty spans: ~90 MiB parsed
    limiter = _limiter(used_mib=10, limit_mib=200, spike_mib=40)  # twice that fits the limit, not beside others
    other, _ = _reservation(limiter)
    other.grow(10 * MIB)  # 60 MiB in flight
    reservation, refusals = _reservation(limiter)
    reservation.grow(len(body))
    with pytest.raises(DataRefusedError):
        asyncio.run(parse_cost.admit(reservation, Signal.TRACES, body, codec.PROTOBUF))
    assert len(refusals) == 1 and limiter.in_flight == EXPANSION * (len(body) + 10 * MIB)


def test_request_without_a_limiter_is_not_walked() -> None:
    reservation, _ = _reservation_of([])
    body = b"\x0a\x00" * 1_000_000
    asyncio.run(parse_cost.admit(reservation, Signal.TRACES, body, codec.PROTOBUF))  # nothing to reserve in


def _reservation_of(limiters: list[MemoryLimiter]) -> tuple[Reservation, list[DataRefusedError]]:
    refusals: list[DataRefusedError] = []
    return Reservation(limiters, refusals.append), refusals


def test_cancelled_caller_waits_for_the_worker_thread_before_its_reservation_ends() -> None:
    """A client that goes away cancels the handler; the parse on the worker thread goes on, and
    the memory it takes must stay reserved until it ends."""
    release = threading.Event()
    finished: list[float] = []

    def parse() -> None:
        release.wait(5)
        finished.append(time.monotonic())

    async def scenario() -> float:
        task = asyncio.create_task(parse_cost._off_loop(parse_cost.OFF_LOOP_BYTES, parse))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.1)
        assert not task.done()  # still waiting for the thread
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    ended = asyncio.run(scenario())
    assert finished and finished[0] <= ended


def test_a_small_body_is_reserved_for_at_its_ceiling_while_memory_allows_and_counted_when_it_does_not() -> None:
    """The ceiling needs no pass over the body; when memory is short for it, a bound that read the
    body is reserved instead, and the request is admitted."""
    body = bodies.ordinary_traces()
    ample = _limiter(used_mib=10, limit_mib=512)
    short = _limiter(used_mib=512 - 102 - 10, limit_mib=512, spike_mib=102)  # 10 MiB of room below the soft limit
    reserved = []
    for limiter in (ample, short):
        busy, _ = _reservation(limiter)
        busy.grow(1)  # another request in flight: this one must fit below the soft limit
        reservation, refusals = _reservation(limiter)
        asyncio.run(parse_cost.admit(reservation, Signal.TRACES, body, codec.PROTOBUF))
        assert not refusals
        reserved.append(limiter.in_flight - busy.bytes * EXPANSION)
    assert reserved[0] == parse_cost.ceiling_cost(body) > 10 * MIB
    assert reserved[1] == parse_cost.worst_case(Signal.TRACES, body, codec.PROTOBUF) < 10 * MIB


def test_requests_taking_the_ceiling_leave_room_for_the_counted_ones_behind_them() -> None:
    """Forty 512-span requests in flight at once, as forty client connections make them: each fits
    when counted (about 5 MiB), so none may be refused because those before took their ceiling."""
    body = bodies.ordinary_traces()
    limiter = _limiter(used_mib=50, limit_mib=512, spike_mib=102)
    held = []
    for _ in range(40):
        reservation, refusals = _reservation(limiter)
        reservation.grow(len(body))
        asyncio.run(parse_cost.admit(reservation, Signal.TRACES, body, codec.PROTOBUF))
        assert not refusals
        held.append(reservation)
    assert limiter.in_flight < limiter.soft - limiter.used
    for reservation in held:
        reservation.release()
    assert limiter.in_flight == 0


@pytest.mark.parametrize(("settings", "total_mib", "hard_mib", "soft_mib"), [
    ({"limit_mib": 1000}, 0, 1000, 800),
    ({"limit_percentage": 82}, 1000, 820, 656),  # spike is a fifth of the limit, not limit_percentage // 5 %
    ({"limit_percentage": 4}, 1000, 40, 32),
    ({"limit_percentage": 50, "spike_limit_percentage": 10}, 1000, 500, 400),
])
def test_limits_are_otelcols_with_the_default_spike_a_fifth_of_the_limit(settings, total_mib, hard_mib, soft_mib):
    config = MemoryLimiterConfig.model_validate({"check_interval": "1s", **settings})
    assert config.limits(total_mib << 20) == (hard_mib << 20, soft_mib << 20)
