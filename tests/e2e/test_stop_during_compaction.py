"""A SIGTERM while the queue is compacted at start-up (`compaction::on_start`) stops the agent at once.

The copy of a large backlog takes seconds (minutes on an SD card), and the stop waited for it to
end and for the whole start after it: longer than systemd's stop timeout or a pod's grace period,
whose SIGKILL then cut the agent down. Given up, the compaction leaves the queue as it was: the same
data file, nothing of the copy left beside it, every record there at the next start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time

from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal
from tests.helpers.agent import AgentProcess
from tests.helpers.net import wait_until

RECORDS = 640
SIZE = 1 << 20  # incompressible: 640 MiB of live data to copy
STOPPED_WITHIN = 2.0  # seconds from the SIGTERM to the exit
CONFIG = """
receivers:
  otlp:
    protocols:
      http:
exporters:
  otlphttp:
    endpoint: ""
    sending_queue:
      storage: file_storage
extensions:
  health_check:
  file_storage:
    directory: ${env:QUEUE_DIR}
    compaction:
      on_start: true
service:
  extensions: [health_check, file_storage]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"""


async def _fill(directory: str) -> list[bytes]:
    store = QueueStore(directory, sync=False)
    store.open()
    store.start()
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    digests = []
    # each record a window of one random pool, 4 KiB further on than the one before: each
    # incompressible and each different, without drawing 640 MiB from the kernel (2 s)
    pool = os.urandom(SIZE + RECORDS * 4096)
    for batch in range(RECORDS // 32):
        bodies = [pool[start:start + SIZE] for start in range(batch * 32 * 4096, (batch + 1) * 32 * 4096, 4096)]
        await asyncio.gather(*(store.put([queue], body, 1, Signal.TRACES) for body in bodies))
        digests += [hashlib.sha256(body).digest() for body in bodies]
    await store.close()
    return digests


async def _stored(directory: str) -> list[bytes]:
    """The queue's records in order, read without taking any (the leases return at the close)."""
    store = QueueStore(directory, sync=False)
    store.open()
    store.start()
    queue = store.queue("otlphttp/traces", Signal.TRACES)
    digests: list[bytes] = []
    for _ in range(RECORDS + 1):
        lease = await queue.lease(max_items=32, max_entries=32)
        if lease is None:
            break
        digests += [hashlib.sha256(body).digest() for body in lease.bodies]
    await store.close()
    return digests


def _agent(tmp_path, name: str) -> AgentProcess:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    agent = AgentProcess(args=["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
                         env={"QUEUE_DIR": str(tmp_path / "queue")}, log_path=str(tmp_path / f"{name}.log"))
    agent.args += agent.ports_overrides()
    return agent


def _logged(agent: AgentProcess, message: str) -> list[dict]:
    with open(agent.log_path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.startswith("{")]
    return [line for line in lines if line.get("msg") == message]


def test_a_sigterm_during_compaction_at_start_stops_at_once_and_keeps_every_record(tmp_path):
    directory = str(tmp_path / "queue")
    try:
        digests = asyncio.run(_fill(directory))
        data = os.stat(os.path.join(directory, "data.mdb"))

        first = _agent(tmp_path, "first")
        process = first.launch()
        try:
            wait_until(lambda: _logged(first, "compacting the queue") or process.poll() is not None, timeout=20,
                       interval=0.01, message="the compaction began")
            assert process.poll() is None, first.log()
            process.terminate()
            signalled = time.monotonic()
            code = process.wait(30)
            stopped_after = time.monotonic() - signalled
        finally:
            first.kill()
        assert code == 0, first.log()
        assert not _logged(first, "edgeagent is ready"), first.log()
        assert sorted(os.listdir(directory)) == ["data.mdb", "edgeagent.lock", "lock.mdb", "reserve.ballast"]
        assert os.stat(os.path.join(directory, "data.mdb")).st_ino == data.st_ino  # the file it had, unswapped

        second = _agent(tmp_path, "second")
        try:
            second.start()  # compacts to the end this time
            assert second.metric("edgeagent_queue_items") == RECORDS
            (compacted,) = _logged(second, "queue compacted")
            assert second.terminate() == 0
        finally:
            second.kill()
        assert asyncio.run(_stored(directory)) == digests
        # the stop waited neither for the compaction (a whole one took `seconds`) nor for the start behind it
        assert stopped_after < min(STOPPED_WITHIN, compacted["seconds"] / 2), (stopped_after, compacted)
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # pytest keeps the last runs' directories
