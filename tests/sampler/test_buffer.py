"""The in-memory side of the sampler: deadlines, limits and the decision caches."""

from __future__ import annotations

import os
import random

import pytest

from sampler.buffer import DecisionCache, Timing, TraceBuffer


def test_traces_are_due_after_decision_wait_in_first_seen_order():
    buffer = TraceBuffer(Timing(decision_wait=10))
    buffer.add(b"a" * 16, 2, 100, False, now=0)
    buffer.add(b"b" * 16, 1, 50, False, now=1)
    buffer.add(b"a" * 16, 3, 100, False, now=5)  # more spans do not move decision_wait
    assert buffer.spans == 6
    assert buffer.due(9.9, 100) == []
    assert buffer.due(10, 100) == [b"a" * 16]
    assert buffer.due(11, 100) == [b"b" * 16]
    assert buffer.spans == 0 and len(buffer) == 0


def test_traces_restarted_with_earlier_first_seen_times_are_due_in_deadline_order_among_new_ones():
    """Deadlines in arrival order take a quicker path than out-of-order ones; due() must still
    hand out the earliest first, whichever path a trace took."""
    import random
    rng = random.Random(7)
    buffer = TraceBuffer(Timing(decision_wait=10))
    deadlines = {}
    for number in range(400):
        trace_id = number.to_bytes(16, "big")
        now = number / 10
        first = now - rng.uniform(0, 20) if rng.random() < 0.3 else None  # a restarted trace
        buffer.add(trace_id, 1, 10, False, now=now, first=first)
        deadlines[trace_id] = (now if first is None else first) + 10
    handed = []
    for step in range(600):
        handed.append(buffer.due(step / 10, 1000))
    for step, trace_ids in enumerate(handed):  # each at the first step past its deadline, earliest first
        assert [deadlines[t] for t in trace_ids] == sorted(deadlines[t] for t in trace_ids)
        assert all(step / 10 - 0.1 < deadlines[t] <= step / 10 + 1e-9 or (step == 0 and deadlines[t] <= 0)
                   for t in trace_ids)
    assert sum(map(len, handed)) == 400 and len(buffer) == 0


def test_a_root_span_brings_the_decision_forward():
    buffer = TraceBuffer(Timing(decision_wait=30, after_root=2))
    buffer.add(b"a" * 16, 1, 10, False, now=0)
    buffer.add(b"a" * 16, 1, 10, True, now=1)
    assert buffer.due(2.9, 10) == []
    assert buffer.due(3, 10) == [b"a" * 16]


def test_inactivity_timeout_waits_for_quiet_but_not_past_max_duration():
    buffer = TraceBuffer(Timing(decision_wait=30, inactivity=5, max_duration=12))
    buffer.add(b"a" * 16, 1, 10, False, now=0)
    buffer.add(b"a" * 16, 1, 10, False, now=4)
    assert buffer.due(6, 10) == []  # quiet for 2 s only
    buffer.add(b"a" * 16, 1, 10, False, now=8)
    assert buffer.due(12.5, 10) == [b"a" * 16]  # still active, but 12 s after its first span


def test_oldest_traces_leave_first_when_the_buffer_is_over_its_limit():
    buffer = TraceBuffer(Timing(decision_wait=30))
    for index in range(5):
        buffer.add(bytes([index]) * 16, 1, 10, False, now=index)
    assert buffer.oldest(2) == [bytes([0]) * 16, bytes([1]) * 16]
    assert len(buffer) == 3


def test_decision_cache_remembers_kept_in_an_lru_and_dropped_in_generations():
    cache = DecisionCache(kept_size=2, dropped_size=1000)
    kept = [os.urandom(16) for _ in range(3)]
    for trace_id in kept:
        cache.record(trace_id, True)
    assert cache.lookup(kept[0]) is None  # evicted by the LRU
    assert cache.lookup(kept[2]) is True
    dropped = [os.urandom(16) for _ in range(400)]
    for trace_id in dropped:
        cache.record(trace_id, False)
    assert all(cache.lookup(trace_id) is False for trace_id in dropped)
    strangers = [os.urandom(16) for _ in range(10_000)]
    false_positives = sum(cache.lookup(trace_id) is False for trace_id in strangers)
    assert false_positives == 0  # the ids themselves are held: an answer is exact


def test_dropped_tables_rotate_so_memory_stays_fixed():
    cache = DecisionCache(kept_size=0, dropped_size=200)
    first = [os.urandom(16) for _ in range(100)]
    for trace_id in first:
        cache.record(trace_id, False)
    for _ in range(250):  # two rotations later the first ids are forgotten
        cache.record(os.urandom(16), False)
    assert sum(cache.lookup(trace_id) is False for trace_id in first) < 10


def test_a_later_drop_replaces_a_kept_decision_and_a_later_keep_a_dropped_one():
    """Shared decisions: a replica whose decision lost to another's records the winner."""
    cache = DecisionCache(kept_size=10, dropped_size=100)
    first, second = os.urandom(16), os.urandom(16)
    cache.record(first, True)
    cache.record(first, False)
    cache.record(second, False)
    cache.record(second, True)
    assert (cache.lookup(first), cache.lookup(second)) == (False, True)


def test_a_small_dropped_generation_answers_no_new_id_dropped():
    # a false positive would drop the first spans of a new trace, on tables as small as a
    # num_traces of 200 gives
    cache = DecisionCache(kept_size=0, dropped_size=200)
    false_positives = 0
    for _ in range(20):
        for _ in range(100):
            cache.record(os.urandom(16), False)
        false_positives += sum(cache.lookup(os.urandom(16)) is False for _ in range(5000))
    assert false_positives == 0  # 100,000 lookups


def test_a_kept_id_recorded_again_moves_to_the_end_of_the_lru():
    cache = DecisionCache(kept_size=2, dropped_size=100)
    first, second, third = os.urandom(16), os.urandom(16), os.urandom(16)
    cache.record(first, True)
    cache.record(second, True)
    cache.record(first, True)  # now the most recent: the next keep evicts `second`
    cache.record(third, True)
    assert (cache.lookup(first), cache.lookup(second), cache.lookup(third)) == (True, None, True)


def test_full_dropped_generations_find_every_id_they_hold_and_no_other():
    rng = random.Random(3)
    cache = DecisionCache(kept_size=0, dropped_size=8000)
    held = [rng.randbytes(16) for _ in range(8000)]  # both generations hold their capacity
    cache.record_many(held, False)
    assert all(cache.lookup(trace_id) is False for trace_id in held)
    assert cache.lookup_many(held[:52]) == [False] * 52
    assert sum(cache.lookup(rng.randbytes(16)) is False for _ in range(200_000)) == 0
    cache.record(rng.randbytes(16), False)  # a third generation begins: the first one goes
    assert cache.lookup(held[0]) is None and cache.lookup(held[-1]) is False


def test_record_many_leaves_the_cache_as_record_does_across_rotations():
    ids = [os.urandom(16) for _ in range(350)]
    one_by_one = DecisionCache(kept_size=60, dropped_size=200)
    batched = DecisionCache(kept_size=60, dropped_size=200)
    for cache in (one_by_one, batched):
        for trace_id in ids[:60]:  # kept first: the drops below take them out of the LRU
            cache.record(trace_id, True)
    for trace_id in ids[40:]:
        one_by_one.record(trace_id, False)
    batched.record_many(ids[40:150], False)
    batched.record_many(ids[150:], False)  # tables of 100 ids: rotations within a batch and between
    batched.record_many([], False)
    assert batched.version == one_by_one.version
    assert list(batched.kept) == list(one_by_one.kept) == ids[:40]
    assert (list(batched._current), list(batched._previous)) == (list(one_by_one._current),
                                                                  list(one_by_one._previous))
    assert all(batched.lookup(trace_id) is False for trace_id in ids[250:])
    kept = [os.urandom(16) for _ in range(60)]
    batched.record_many(kept, True)
    assert list(batched.kept) == kept


def test_record_many_without_a_dropped_table_only_counts():
    cache = DecisionCache(kept_size=10, dropped_size=0)
    cache.record_many([os.urandom(16) for _ in range(5)], False)
    assert cache.version == 5 and cache.lookup(os.urandom(16)) is None


def _twin_caches(rng: random.Random, kept_size: int, dropped_size: int,
                 dropped: int | None = None) -> tuple[DecisionCache, DecisionCache, list]:
    """Two caches given the same decisions: ids kept, dropped in the previous table and in the
    current one (by default the tables rotated once, both past their first slots; else the first
    `dropped` ids), and kept after a drop."""
    ids = [rng.randbytes(16) for _ in range(2 * dropped_size)]
    caches = DecisionCache(kept_size, dropped_size), DecisionCache(kept_size, dropped_size)
    dropped = dropped_size // 2 + dropped_size // 4 if dropped is None else dropped
    for cache in caches:
        cache.record_many(ids[:dropped], False)  # by default one full table, one in use
        for trace_id in ids[dropped_size:dropped_size + 40]:
            cache.record(trace_id, True)
        for trace_id in ids[:5] + ids[dropped_size // 2 + 10:dropped_size // 2 + 15]:  # kept after a drop, in
            cache.record(trace_id, True)  # either table: the LRU answers first
    return caches[0], caches[1], ids


@pytest.mark.parametrize("sizes", [
    (60, 4000), (0, 4000), (60, 0), (0, 0), (10, 1),
    # tables of 8,192 slots for 2,100 ids each: sparse (first slots sifted in C) with only the
    # current one in use, and with the previous one full; filled (each id probed) past that
    (60, 4200, 1000), (60, 4200, 2200), (60, 4200, 4000)])
def test_lookup_many_answers_and_orders_the_lru_as_lookup_does_id_by_id(sizes):
    rng = random.Random(str(sizes))
    one_by_one, batched, ids = _twin_caches(rng, *sizes)
    strangers = [rng.randbytes(16) for _ in range(3000)]
    asked = ids + strangers + ids[:3] + ids[-50:]  # every kind, some twice
    rng.shuffle(asked)
    for at in range(0, len(asked), 52):
        chunk = asked[at:at + 52]
        assert batched.lookup_many(chunk) == [one_by_one.lookup(trace_id) for trace_id in chunk]
    assert list(batched.kept) == list(one_by_one.kept)
    assert batched.lookup_many([]) == []


def test_lookup_many_finds_ids_dropped_in_either_table_and_keeps_the_lru_first():
    rng = random.Random(9)
    _, cache, ids = _twin_caches(rng, 60, 4000)
    assert cache._previous and cache._current  # both generations hold ids
    answers = cache.lookup_many(ids[:3000] + ids[4000:4040] + ids[-5:])
    assert answers == [True] * 5 + [False] * 2005 + [True] * 5 + [False] * 985 + [True] * 40 + [None] * 5
    assert list(cache.kept)[-5:] == ids[4035:4040]  # looked up last: the LRU's most recent
    fresh = DecisionCache(10, 100)  # tables, none filled yet
    assert fresh.lookup_many([ids[0], ids[1]]) == [None, None]


def _buffer_state(buffer: TraceBuffer) -> tuple:
    return (list(buffer.traces.items()), list(buffer._fifo), sorted(buffer._heap), buffer.spans,
            next(buffer._order))


@pytest.mark.parametrize("timing", [Timing(5.0), Timing(5.0, after_root=1.0), Timing(5.0, inactivity=2.0)])
def test_add_many_leaves_the_buffer_as_add_does_part_by_part(timing):
    rng = random.Random(5)
    one_by_one, batched = TraceBuffer(timing), TraceBuffer(timing)
    known, restarted = [rng.randbytes(16) for _ in range(3)], rng.randbytes(16)
    for buffer in (one_by_one, batched):
        for trace_id in known:
            buffer.add(trace_id, 2, 100, False, 10.0, times=(1, 2), hints=1)
        buffer.add(restarted, 1, 10, False, 10.0, first=20.0)  # a later deadline: the FIFO ends at 25
    added_one_by_one: list[bytes] = []
    batched.add = lambda trace_id, *args, **kwargs: (  # type: ignore[method-assign]
        added_one_by_one.append(trace_id), TraceBuffer.add(batched, trace_id, *args, **kwargs))[1]
    batches = [
        (11.0, [(rng.randbytes(16), 3, 300, False, (5, 9), 2) for _ in range(20)]),  # deadlines before the FIFO's last
        (21.0, [(rng.randbytes(16), 1, 50, index == 1, None, None) for index in range(4)]),  # new, a root among them
        (22.0, [(known[0], 4, 40, True, (0, 3), 4), (rng.randbytes(16), 1, 10, False, None, 1)]),  # a known trace
        (23.0, [(trace_id, 1, 10, False, None, None) for trace_id in (b"\x01" * 16, b"\x01" * 16)]),  # one twice
        (24.0, [(rng.randbytes(16), 2, 20, False, (1, 1), 0) for _ in range(30)]),  # new
        (30.0, []),
    ]
    for now, batch in batches:
        for trace_id, spans, size, root, times, hints in batch:
            one_by_one.add(trace_id, spans, size, root, now, times=times, hints=hints)
        columns = list(zip(*batch, strict=True)) or [()] * 6
        batched.add_many(*columns[:4], now, *columns[4:])
        assert _buffer_state(batched) == _buffer_state(one_by_one)
    assert batched.due(100.0, 1000) == one_by_one.due(100.0, 1000)
    in_c = {trace_id for _, batch in (batches[1], batches[4]) for trace_id, *_ in batch}
    assert in_c.isdisjoint(added_one_by_one) == (timing == Timing(5.0))  # decision_wait alone: new traces in C


def test_add_many_of_new_traces_queues_their_deadlines_in_the_fifo_after_the_earlier_ones():
    buffer = TraceBuffer(Timing(5.0))
    first = [bytes([n]) * 16 for n in range(1, 4)]
    later = [bytes([n]) * 16 for n in range(4, 7)]
    buffer.add_many(first, [1, 2, 3], [10, 20, 30], [False] * 3, 1.0, [None] * 3, [None] * 3)
    buffer.add_many(later, [1, 1, 1], [10, 10, 10], [False] * 3, 2.0, [(1, 2)] * 3, [3] * 3)
    assert not buffer._heap and [entry[0] for entry in buffer._fifo] == [6.0] * 3 + [7.0] * 3
    assert buffer.spans == 9 and buffer.traces[later[0]] == (2.0, 2.0, 1, 10, None, (1, 2), 3)
    assert buffer.due(6.5, 10) == first and buffer.due(7.0, 10) == later


def test_due_traces_taken_at_once_skip_entries_of_traces_gone_and_still_fill_the_limit():
    """With decision_wait alone the FIFO's due prefix is taken in one go: entries of traces
    removed since (stale) must neither come out nor count against the limit, and the buffered
    spans must drop by the traces handed out only."""
    buffer = TraceBuffer(Timing(decision_wait=10))
    ids = [number.to_bytes(16, "big") for number in range(50)]
    for number, trace_id in enumerate(ids):
        buffer.add(trace_id, number + 1, 10, False, now=number / 10)
    gone = set(ids[0:40:3])
    for trace_id in gone:
        buffer.remove(trace_id)
    live = [trace_id for trace_id in ids if trace_id not in gone]
    spans = buffer.spans
    first = buffer.due_pending(100, 20)
    assert list(first) == live[:20]
    assert first[live[0]][2] == 2  # what the buffer knew: spans of the second trace added
    assert buffer.spans == spans - sum(pending[2] for pending in first.values())
    # deadline: number / 10 + 10; the entries after 34's are not due yet
    assert buffer.due(13.45, 1000) == [trace_id for trace_id in live[20:] if int.from_bytes(trace_id, "big") <= 34]
    assert buffer.due(100, 1000) == [trace_id for trace_id in live[20:] if int.from_bytes(trace_id, "big") > 34]
    assert buffer.spans == 0 and len(buffer) == 0


def test_a_trace_queued_twice_in_the_fifo_comes_out_once():
    """decision_wait_after_root_received may queue a trace's earlier deadline behind its first one."""
    buffer = TraceBuffer(Timing(decision_wait=10, after_root=5))
    buffer.add(b"a" * 16, 1, 10, False, now=0)  # due at 10
    buffer.add(b"b" * 16, 1, 10, False, now=1)  # due at 11
    buffer.add(b"a" * 16, 1, 10, True, now=6)  # a root: due at 11 too, queued after b's
    assert buffer.due(11, 10) == [b"a" * 16, b"b" * 16]
    assert buffer.due(100, 10) == [] and buffer.spans == 0


@pytest.mark.parametrize("kept_size", [0, 5, 50])
def test_record_many_kept_orders_the_lru_as_record_does_id_by_id(kept_size):
    rng = random.Random(kept_size)
    pool = [rng.randbytes(16) for _ in range(40)]
    one_by_one, batched = DecisionCache(kept_size, 100), DecisionCache(kept_size, 100)
    for _ in range(30):  # new ids, ids kept before, an id twice in one call
        chunk = rng.sample(pool, rng.randint(0, 8)) + ([pool[0]] if rng.random() < 0.2 else [])
        for trace_id in chunk:
            one_by_one.record(trace_id, True)
        batched.record_many(chunk, True)
        assert list(batched.kept) == list(one_by_one.kept) and batched.version == one_by_one.version
