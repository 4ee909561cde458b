"""sending_queue::batch (otelcol 0.165's exporter-side batching) shapes what the upstream gets.

The sender leases from the durable queue with the exporter's own flush_timeout, min_size and
max_size: small requests are merged, large ones split, and the client's OK never waits for it.
"""

from __future__ import annotations

import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from tests.helpers.net import free_port
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
exporters:
  otlp_http:
    endpoint: ${env:UPSTREAM}
    sending_queue:
      num_consumers: 1
      storage: file_storage
      batch:
        flush_timeout: ${env:FLUSH}
        min_size: ${env:MIN_SIZE}
        max_size: ${env:MAX_SIZE}
extensions:
  health_check:
  file_storage:
    directory: ${env:QUEUE_DIR}
service:
  extensions: [health_check, file_storage]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp_http]
"""


def _post(port: int, first: int, spans: int = 1) -> int:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index in range(first, first + spans):
        scope.spans.add(name="batched", span_id=index.to_bytes(8, "big"), trace_id=b"\x03" * 16)
    status, _ = post(port, request)
    return status


def _delivered(upstream: Upstream, count: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(upstream.span_ids()) < count:
        time.sleep(0.05)
    return [call.items for call in upstream.calls if call.status == 200]


def _start(agents, tmp_path, upstream: Upstream, flush: str, min_size: int, max_size: int):
    config = tmp_path / "batching.yaml"
    config.write_text(CONFIG)
    (tmp_path / "queue").mkdir()
    return agents(["run", "--config", str(config)],
                  env={"UPSTREAM": upstream.url, "FLUSH": flush, "MIN_SIZE": str(min_size),
                       "MAX_SIZE": str(max_size), "QUEUE_DIR": str(tmp_path / "queue")})


def test_exporter_batch_min_size_merges_small_requests_into_one_upstream_request(agents, tmp_path):
    upstream = Upstream(free_port()).start()
    try:
        agent = _start(agents, tmp_path, upstream, flush="10s", min_size=6, max_size=0)
        for index in range(6):  # without exporter batching each request goes out on its own
            assert _post(agent.http_port, first=index + 1) == 200
        assert _delivered(upstream, 6) == [6]
        assert agent.terminate() == 0
    finally:
        upstream.stop()


def test_exporter_batch_flush_timeout_sends_a_batch_smaller_than_min_size(agents, tmp_path):
    upstream = Upstream(free_port()).start()
    try:
        agent = _start(agents, tmp_path, upstream, flush="300ms", min_size=1000, max_size=0)
        assert _post(agent.http_port, first=1, spans=3) == 200
        started = time.monotonic()
        assert _delivered(upstream, 3) == [3]
        assert time.monotonic() - started < 10  # not held until min_size arrives
        assert agent.terminate() == 0
    finally:
        upstream.stop()


def test_exporter_batch_max_size_splits_a_large_request(agents, tmp_path):
    upstream = Upstream(free_port()).start()
    try:
        agent = _start(agents, tmp_path, upstream, flush="200ms", min_size=1, max_size=2)
        assert _post(agent.http_port, first=1, spans=5) == 200
        sizes = _delivered(upstream, 5)
        assert sum(sizes) == 5 and max(sizes) <= 2, sizes
        assert agent.terminate() == 0
    finally:
        upstream.stop()
