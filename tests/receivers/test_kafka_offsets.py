"""The kafka receiver's durable offset: what a commit may write while messages finish out of order."""

from __future__ import annotations

from edgeagent.receivers.kafka import _Partition
from edgeagent.signals import Signal


def _partition(*dispatched: int) -> _Partition:
    partition = _Partition("otlp_spans", 0, Signal.TRACES, "otlp_proto", consumer=None)
    for offset in dispatched:
        partition.pending[offset] = False
    return partition


def test_a_later_message_durable_first_does_not_move_the_commit_past_an_earlier_one():
    partition = _partition(10, 11, 12)
    assert not partition.mark_durable(12)
    assert partition.durable is None
    assert partition.mark_durable(10)
    assert partition.durable == 11  # 11 is still in flight: its data is not durable
    assert partition.mark_durable(11)
    assert partition.durable == 13 and not partition.pending


def test_offset_gaps_follow_the_dispatched_records_not_offset_plus_one():
    partition = _partition(5, 9, 20)  # compacted topic or transaction markers in between
    partition.mark_durable(9)
    partition.mark_durable(5)
    assert partition.durable == 10
    partition.mark_durable(20)
    assert partition.durable == 21
