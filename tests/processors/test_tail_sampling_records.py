"""The tail-sampling stage's index of its buffer records: which records hold which traces' parts."""

from __future__ import annotations

from edgeagent.processors.tail_sampling.records import RecordIndex

A, B, C, D = (bytes([n]) * 16 for n in range(1, 5))


def test_a_record_of_new_traces_indexes_each_under_its_key_alone():
    index = RecordIndex()
    index.add(b"k1", b"batch", [(A, 10, 1), (B, 20, 2)])
    assert index.traces == {A: (b"k1",), B: (b"k1",)}
    assert index.records[b"k1"].parts == [(A, 10, 1), (B, 20, 2)] and index.records[b"k1"].batch_key == b"batch"
    assert index.keys_of([A, B]) == [b"k1"]


def test_a_trace_already_indexed_keeps_its_earlier_records_and_gains_the_new_one():
    index = RecordIndex()
    index.add(b"k1", b"", [(A, 10, 1), (B, 20, 2)])
    index.add(b"k2", b"", [(C, 5, 1), (A, 7, 1), (D, 3, 1)])  # one known trace among new ones
    index.add(b"k3", b"", [(D, 1, 1), (D, 2, 1)])  # one trace twice in a record: its key once
    assert index.traces == {A: (b"k1", b"k2"), B: (b"k1",), C: (b"k2",), D: (b"k2", b"k3")}
    assert index.keys_of([A]) == [b"k1", b"k2"]
    index.add(b"k4", b"", [])
    assert b"k4" in index.records and len(index.traces) == 4
