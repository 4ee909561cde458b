"""The index of the tail-sampling buffer records: where each pending trace's parts are, and the
move that takes decided traces out of them."""

from __future__ import annotations

import random

import pytest

from edgeagent.processors.tail_sampling.records import RecordIndex

A, B, C, D = b"\x0a" * 16, b"\x0b" * 16, b"\x0c" * 16, b"\x0d" * 16
K1, K2 = (1).to_bytes(8, "big"), (2).to_bytes(8, "big")


def test_a_record_stored_while_its_traces_were_decided_is_neither_deleted_nor_forgotten():
    """A round plans its move over the records that held its traces when it began: one stored
    since holds spans its move did not export, so it must stay, and stay indexed for the next
    round (the stage's late records)."""
    index = RecordIndex()
    index.add(K1, b"", [(A, 3, 1), (B, 2, 1)])
    touched = index.keys_of([A, B])
    index.add(K2, b"", [(A, 4, 2)])  # more of A, committed while the round ran
    decided = {A: True, B: False}
    assert index.partly_decided(decided, {}, touched) == []
    move = index.plan(decided, {}, touched)
    assert move.deletes == [K1] and not move.rewrites
    index.apply(move, decided)
    assert set(index.records) == {K2} and index.traces == {A: (K2,)}


def test_a_record_keeping_pending_parts_is_stored_again_with_just_those():
    index = RecordIndex()
    index.add(K1, b"batch", [(A, 3, 1), (B, 2, 5), (C, 4, 1)])
    decided = {A: True, C: False}
    touched = index.keys_of(decided)
    assert index.partly_decided(decided, {}, touched) == [K1]  # its body is needed
    body = b"aaa" + b"bb" + b"cccc"
    move = index.plan(decided, {K1: body}, touched)
    assert not move.deletes and move.rewrites == {K1: (b"bb", 5, b"batch", [(B, 2, 5)])}
    index.apply(move, decided)
    assert index.traces == {B: (K1,)} and index.records[K1].parts == [(B, 2, 5)]


def test_rows_are_the_wanted_parts_cut_at_their_offsets_record_by_record():
    index = RecordIndex()
    index.add(K1, b"x", [(A, 3, 1), (B, 2, 5), (C, 4, 1)])
    index.add(K2, b"y", [(C, 1, 7), (A, 2, 2)])
    rows = index.rows({K1: b"aaabbcccc", K2: b"CAA"}, {A, C})
    assert rows == {A: [(K1, b"x", 1, b"aaa"), (K2, b"y", 2, b"AA")],
                    C: [(K1, b"x", 1, b"cccc"), (K2, b"y", 7, b"C")]}
    assert index.fits(K1, b"aaabbcccc") and not index.fits(K2, b"CA")


def test_a_record_of_new_traces_indexes_each_under_its_key_alone():
    index = RecordIndex()
    index.add(b"k1", b"batch", [(A, 10, 1), (B, 20, 2)])
    assert index.traces == {A: (b"k1",), B: (b"k1",)}
    assert index.records[b"k1"].parts == [(A, 10, 1), (B, 20, 2)] and index.records[b"k1"].batch_key == b"batch"
    assert index.keys_of([A, B]) == {b"k1"}


def test_a_trace_already_indexed_keeps_its_earlier_records_and_gains_the_new_one():
    index = RecordIndex()
    index.add(b"k1", b"", [(A, 10, 1), (B, 20, 2)])
    index.add(b"k2", b"", [(C, 5, 1), (A, 7, 1), (D, 3, 1)])  # one known trace among new ones
    index.add(b"k3", b"", [(D, 1, 1), (D, 2, 1)])  # one trace twice in a record: its key once
    assert index.traces == {A: (b"k1", b"k2"), B: (b"k1",), C: (b"k2",), D: (b"k2", b"k3")}
    assert index.keys_of([A]) == {b"k1", b"k2"}
    index.add(b"k4", b"", [])
    assert b"k4" in index.records and len(index.traces) == 4


@pytest.mark.parametrize("seed", range(25))
def test_rows_plan_and_apply_agree_with_a_plain_walk_over_the_parts(seed):
    """The index keeps each record's parts as columns; cutting, planning and following a move
    must give what walking the parts one by one, offset by offset, gives."""
    rng = random.Random(seed)
    pool = [rng.randbytes(16) for _ in range(12)]
    index, stored = RecordIndex(), {}
    for number in range(rng.randrange(1, 8)):
        parts = [(rng.choice(pool), rng.randrange(1, 6), rng.randrange(1, 9)) for _ in range(rng.randrange(0, 7))]
        key = number.to_bytes(8, "big")
        index.add(key, bytes([number]), parts)
        stored[key] = (parts, rng.randbytes(sum(length for _, length, _ in parts)))
    bodies = {key: body for key, (_, body) in stored.items() if rng.random() < 0.8}
    wanted = set(rng.sample(pool, rng.randrange(0, len(pool))))
    decided = {trace_id: rng.random() < 0.5 for trace_id in rng.sample(pool, rng.randrange(0, len(pool)))}

    def cut(key):  # (trace id, length, spans, bytes) of each part of a record, walked one by one
        parts, body = stored[key]
        offset, out = 0, []
        for trace_id, length, spans in parts:
            out.append((trace_id, length, spans, body[offset:offset + length]))
            offset += length
        return out
    rows = {}
    for key in bodies:
        for trace_id, _, spans, piece in cut(key):
            if trace_id in wanted:
                rows.setdefault(trace_id, []).append((key, bytes([key[-1]]), spans, piece))
    assert index.rows(bodies, wanted) == rows
    assert all(index.fits(key, body) for key, (_, body) in stored.items())

    touched = index.keys_of(decided)
    move = index.plan(decided, bodies, touched)
    deletes = [key for key in sorted(touched) if all(part[0] in decided for part in stored[key][0])]
    rewrites = {key: (b"".join(piece for trace_id, _, _, piece in cut(key) if trace_id not in decided),
                      sum(spans for trace_id, _, spans, _ in cut(key) if trace_id not in decided), bytes([key[-1]]),
                      [part for part in stored[key][0] if part[0] not in decided])
                for key in sorted(touched) if key not in deletes and key in bodies}
    assert (move.deletes, move.rewrites) == (deletes, rewrites)
    assert index.partly_decided(decided, {}, touched) == [key for key in sorted(touched) if key not in deletes]

    index.apply(move, decided)
    left = {key: rewrites[key][3] if key in rewrites else parts
            for key, (parts, _) in stored.items() if key not in deletes}
    assert {key: record.parts for key, record in index.records.items()} == left
    holding = {}
    for key, parts in sorted(left.items()):
        for trace_id, _, _ in parts:
            if key not in holding.get(trace_id, ()):
                holding[trace_id] = (*holding.get(trace_id, ()), key)
    assert index.traces == holding
