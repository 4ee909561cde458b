"""A full disk: `block` refuses politely and resumes, `drop_oldest` keeps the newest data; nothing is corrupted."""

from __future__ import annotations

import http.client
import os
import subprocess

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.configs import queue_on_disk_config
from tests.helpers.net import free_port, wait_until
from tests.helpers.upstream import Upstream

SPANS = 500


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError(f"cannot mount a tmpfs in CI: {result.stderr.decode()}")
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _request(index: int) -> tuple[bytes, set[bytes]]:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "disk-full"
    ss = rs.scope_spans.add()
    ids = set()
    for number in range(SPANS):
        span_id = index.to_bytes(4, "big") + number.to_bytes(4, "big")
        span = ss.spans.add(trace_id=os.urandom(16), span_id=span_id, name="op")
        span.attributes.add(key="noise").value.string_value = os.urandom(48).hex()  # resists compression
        ids.add(span_id)
    return request.SerializeToString(), ids


def _post(port: int, body: bytes) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        connection.close()


def _config(tmp_path, directory, policy: str) -> str:
    return queue_on_disk_config(tmp_path / f"{policy}.yaml", directory, policy)


def test_block_refuses_with_retry_after_when_the_disk_is_full_and_resumes_when_space_frees(agents, tmp_path, tmpfs):
    port = free_port()
    agent = agents(["run", "--config", _config(tmp_path, tmpfs / "queue", "block")],
                   env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    accepted: set[bytes] = set()
    refusals = 0
    for index in range(400):
        body, ids = _request(index)
        status, retry_after = _post(agent.http_port, body)
        if status == 200:
            accepted |= ids
        else:
            assert status == 503 and retry_after, (status, retry_after)
            refusals += 1
            if refusals >= 5:
                break
    assert refusals >= 5, "the disk never filled up"
    assert agent.health("/health/ready")[0] == 200
    assert agent.metric("otelcol_receiver_accepted_spans") == len(accepted)

    upstream = Upstream(port).start()  # the backlog drains and frees pages
    try:
        try:
            wait_until(lambda: upstream.span_ids() >= accepted, timeout=60, interval=0.5, message="backlog delivered")
        except AssertionError as error:
            missing = len(accepted - upstream.span_ids())
            raise AssertionError(f"{error}: {missing} spans missing; {agent.health()[1]}") from None
        # Acks must get through a full disk (the reserve is kept for them): an ack that fails leaves
        # the space taken, so ingest stays refused while the backlog is sent again and again.
        delivered = [span.span_id for span in upstream.spans()]
        assert len(delivered) == len(set(delivered)), f"{len(delivered) - len(set(delivered))} spans sent twice"
        body, ids = _request(10_000)
        wait_until(lambda: _post(agent.http_port, body)[0] == 200, timeout=30, interval=0.5, message="ingest resumes")
        wait_until(lambda: upstream.span_ids() >= accepted | ids, timeout=30, message="new data delivered")
    finally:
        upstream.stop()
    assert agent.metric("edgeagent_dropped_items_total") == 0
    assert agent.terminate() == 0


def test_drop_oldest_keeps_the_newest_data_and_counts_exactly_what_was_lost(agents, tmp_path, tmpfs):
    port = free_port()
    agent = agents(["run", "--config", _config(tmp_path, tmpfs / "queue", "drop_oldest")],
                   env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    accepted: set[bytes] = set()
    newest: set[bytes] = set()
    for index in range(700):  # about twice what fits
        body, ids = _request(index)
        for _ in range(20):  # a refusal is retryable: retry as a client would
            if _post(agent.http_port, body)[0] == 200:
                accepted |= ids
                newest = ids
                break
    assert agent.metric("edgeagent_dropped_items_total", reason="disk_full") > 0
    dropped = agent.metric("edgeagent_dropped_items_total")

    upstream = Upstream(port).start()
    try:
        wait_until(lambda: agent.metric("edgeagent_queue_items", data_type="traces") == 0
                   and len(upstream.span_ids()) + dropped >= len(accepted), timeout=120, interval=0.5,
                   message="queue drained")
        delivered = upstream.span_ids()
    finally:
        upstream.stop()
    assert newest <= delivered
    assert delivered <= accepted
    assert len(accepted) - len(delivered) == agent.metric("edgeagent_dropped_items_total")
    assert agent.terminate() == 0
