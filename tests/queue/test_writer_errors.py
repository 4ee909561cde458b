"""The queue's writer thread outlives an unexpected error: the operations of the commit that hit it
fail (their clients get an answer and send again), the error is logged with the directory and
counted, and the next commit goes through."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

BODY = b"x" * 100
TOO_LONG_KEY = "\xff".encode() * 40_000  # two bytes a character: more than the record's 16-bit key length


def test_a_put_the_record_header_cannot_hold_fails_alone_and_the_writer_goes_on(tmp_path, caplog):
    """A batch key longer than 64 KiB raised struct.error while the writer framed the record: the
    writer thread died, that put and every put after it waited forever, and nothing was logged
    but the thread's traceback on stderr."""
    async def scenario() -> None:
        store = QueueStore(str(tmp_path), sync=False)
        store.open()
        store.start()
        queue = store.queue("otlphttp/traces", Signal.TRACES)
        try:
            for _ in range(2):
                with pytest.raises(Exception, match="format requires"):
                    await asyncio.wait_for(store.put([queue], BODY, 1, Signal.TRACES, batch_key=TOO_LONG_KEY), 1.0)
            await asyncio.wait_for(store.put([queue], BODY, 1, Signal.TRACES), 1.0)
            assert queue.items == 1
            assert store.writer_errors == 2
        finally:
            await asyncio.wait_for(store.close(), 2.0)

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    failed = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.__dict__.get("directory") for record in failed] == [str(tmp_path)], "logged once, with the directory"
