"""30 kill -9 at random moments of ingest, drain and compaction, with the upstream flapping: nothing accepted is
lost."""

from __future__ import annotations

import http.client
import os
import random
import threading
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.net import free_port, wait_until
from tests.helpers.upstream import Upstream

CYCLES = 30  # each kill lands at a random moment of ingest, drain or compaction
SPANS_PER_REQUEST = 200
CONFIG = """
receivers:
  otlp:
    protocols:
      http:
processors:
  batch:
    timeout: 50ms
    send_batch_size: 1000
exporters:
  otlphttp:
    endpoint: ${env:UPSTREAM}
    retry_on_failure:
      initial_interval: 50ms
      max_interval: 200ms
    sending_queue:
      num_consumers: 4
      queue_size: 100000
      storage: file_storage
extensions:
  health_check:
  file_storage:
    directory: ${env:QUEUE_DIR}
    compaction:
      on_start: true
      on_rebound: true
      rebound_needed_threshold_mib: 1
      rebound_trigger_threshold_mib: 1
      check_interval: 100ms
service:
  extensions: [health_check, file_storage]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlphttp]
"""


class Ingest(threading.Thread):
    """Posts requests of fresh span ids while the agent lives; remembers the ones it acknowledged."""

    def __init__(self, port: int, first_id: int):
        super().__init__(daemon=True)
        self.port, self.next_id = port, first_id
        self.accepted: set[bytes] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        for _ in range(10_000):
            if self.stop.is_set():
                return
            request = ExportTraceServiceRequest()
            spans = request.resource_spans.add().scope_spans.add().spans
            ids = []
            for _ in range(SPANS_PER_REQUEST):
                span_id = self.next_id.to_bytes(8, "big")
                self.next_id += 1
                spans.add(trace_id=os.urandom(16), span_id=span_id, name="op")
                ids.append(span_id)
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("POST", "/v1/traces", body=request.SerializeToString(),
                                   headers={"Content-Type": "application/x-protobuf"})
                if connection.getresponse().status == 200:
                    self.accepted.update(ids)
                connection.close()
            except OSError:
                time.sleep(0.02)  # the agent is gone or not up yet


class Flapper(threading.Thread):
    def __init__(self, upstream: Upstream):
        super().__init__(daemon=True)
        self.upstream, self.stop = upstream, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.upstream.status = 503 if self.upstream.status == 200 else 200


def test_thirty_kill_9_at_random_moments_lose_nothing_and_bound_duplicates(agents, tmp_path):
    rng = random.Random(20261123)
    config = tmp_path / "torture.yaml"
    config.write_text(CONFIG)
    upstream = Upstream(free_port()).start()
    flapper = Flapper(upstream)
    flapper.start()
    env = {"UPSTREAM": upstream.url, "QUEUE_DIR": str(tmp_path / "queue")}
    accepted: set[bytes] = set()
    next_id = 1
    previous = None
    try:
        for _ in range(CYCLES):
            agent = agents(["run", "--config", str(config)], env=env, ports=previous)
            ingest = Ingest(agent.http_port, next_id)
            ingest.start()
            time.sleep(rng.uniform(0.1, 0.7))
            agent.kill()
            ingest.stop.set()
            ingest.join(10)
            accepted |= ingest.accepted
            next_id = ingest.next_id
            previous = agent
        flapper.stop.set()
        flapper.join(5)  # else a toggle under way when the stop came could leave the upstream at 503
        upstream.status = 200
        final = agents(["run", "--config", str(config)], env=env, ports=previous)
        try:
            wait_until(lambda: upstream.span_ids() >= accepted, timeout=120, interval=0.5,
                       message="every accepted span upstream")
        except AssertionError as error:
            missing = sorted(accepted - upstream.span_ids())
            raise AssertionError(f"{error}: {len(missing)} of {len(accepted)} missing, e.g. "
                                 f"{[int.from_bytes(m, 'big') for m in missing[:5]]}; {final.health()[1]}") from None
        assert final.terminate() == 0
    finally:
        flapper.stop.set()
        upstream.stop()

    # each span received once more than its first is a duplicate: what arrived less the distinct ids
    # (counted as they came, where parsing every request again took seconds)
    received = sum(call.items for call in upstream.calls if call.signal == "traces" and call.status == 200)
    duplicates = received - len(upstream.span_ids())
    print(f"accepted {len(accepted)} spans over {CYCLES} kills; received {received}, duplicates {duplicates}")
    assert len(accepted) > CYCLES * SPANS_PER_REQUEST
    # a duplicate is a span that was in flight at a kill: at most num_consumers leases of 1000 spans per kill
    assert duplicates <= CYCLES * 4 * 1000
