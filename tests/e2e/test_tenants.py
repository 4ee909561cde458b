"""batch metadata_keys keeps two tenants' data in separate upstream requests."""

from __future__ import annotations

import http.client
import os

from tests.helpers import bodies
from tests.helpers.net import wait_until
from tests.helpers.sdk import send_spans

CONFIG = os.path.join(os.path.dirname(__file__), "..", "testdata", "e2e", "tenants.yaml")


def test_metadata_keys_batching_never_mixes_tenants_in_one_request(agents, upstream, tmp_path):
    agent = agents(["run", "--config", CONFIG, "--state-dir", str(tmp_path / "state")], env={"UPSTREAM": upstream.url})
    sent = set()
    for _ in range(3):  # interleave the tenants so that a plain batcher would merge them
        sent |= send_spans("http", agent.http_port, 200, headers={"X-Tenant-Id": "acme"})
        sent |= send_spans("grpc", agent.grpc_port, 150, headers=(("x-tenant-id", "globex"),))
    wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="both tenants upstream")

    tenants_per_request = []
    for received in upstream.received("traces"):
        tenants = {kv.value.string_value for rs in received.message.resource_spans for ss in rs.scope_spans
                   for span in ss.spans for kv in span.attributes if kv.key == "tenant"}
        tenants_per_request.append(tenants)
    assert all(len(tenants) == 1 for tenants in tenants_per_request), tenants_per_request
    assert set().union(*tenants_per_request) == {"acme", "globex"}
    assert len(tenants_per_request) < 12  # batching did merge each tenant's requests
    assert agent.terminate() == 0


def _post_as_tenant(port: int, tenant: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", "/v1/traces")
        connection.putheader("Content-Type", "application/x-protobuf")
        connection.putheader("X-Tenant-Id", tenant)
        body = bodies.ordinary_traces(4)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_tenant_too_long_for_a_queue_record_is_refused_and_later_requests_are_queued(agents, upstream, tmp_path):
    """A metadata_keys value longer than a queue record's 16-bit batch-key length (40 000 bytes of
    0xFF, read as latin-1, are 80 000 bytes of UTF-8) killed the queue's writer thread: that request
    and every later one hung until the agent was restarted."""
    agent = agents(["run", "--config", CONFIG, "--state-dir", str(tmp_path / "state")], env={"UPSTREAM": upstream.url})
    assert _post_as_tenant(agent.http_port, b"\xff" * 40_000) == 400
    sent = send_spans("http", agent.http_port, 10, headers={"X-Tenant-Id": "acme"})
    wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="the next tenant's spans upstream")
    assert agent.terminate() == 0
