"""memory_limiter under a flood: memory stays under limit_mib, refusals are retryable, nothing accepted is lost."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.net import wait_until

LIMIT_MIB = 160
SPANS_PER_REQUEST = 3000
CONNECTIONS = 48
FLOOD_SECONDS = 4  # refusals from the first second; without the in-flight charge the agent passes 200 MiB in it


def _body(seed: int) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = f"flood-{seed}"
    ss = rs.scope_spans.add()
    for index in range(SPANS_PER_REQUEST):
        span = ss.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name=f"op-{index % 50}", kind=2,
                            start_time_unix_nano=1, end_time_unix_nano=2)
        for key in range(6):
            span.attributes.add(key=f"attr.{key}").value.string_value = f"value-{key}-{index}"
    return request.SerializeToString()


class MemorySampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            try:
                with open(f"/proc/{self.pid}/status") as status:
                    for line in status:
                        if line.startswith("RssAnon:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except OSError:
                return


async def _flood(url: str, bodies: list[bytes], seconds: float) -> dict:
    results = {"ok": 0, "refused": 0, "refused_without_retry_after": 0, "other": 0}
    deadline = time.monotonic() + seconds
    headers = {"Content-Type": "application/x-protobuf"}

    async def worker(session: aiohttp.ClientSession, index: int) -> None:
        count = 0
        while time.monotonic() < deadline and count < 10_000:
            count += 1
            async with session.post(url, data=bodies[(index + count) % len(bodies)], headers=headers) as response:
                await response.read()
                if response.status == 200:
                    results["ok"] += 1
                elif response.status == 503:
                    results["refused"] += 1
                    if not response.headers.get("Retry-After"):
                        results["refused_without_retry_after"] += 1
                else:
                    results["other"] += 1

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session, i) for i in range(CONNECTIONS)))
    return results


def test_a_flood_is_refused_politely_memory_stays_bounded_and_the_agent_recovers(agents, tmp_path):
    agent = agents(["run", "--state-dir", str(tmp_path / "state"),
                    "--set", f"processors::memory_limiter::limit_mib={LIMIT_MIB}",
                    "--set", "processors::memory_limiter::spike_limit_mib=40",
                    "--set", "processors::memory_limiter::check_interval=100ms"])
    bodies = [_body(seed) for seed in range(8)]
    sampler = MemorySampler(agent.process.pid)
    sampler.start()
    url = f"http://127.0.0.1:{agent.http_port}/v1/traces"
    results = asyncio.run(_flood(url, bodies, FLOOD_SECONDS))
    sampler.stop.set()
    sampler.join()

    print(f"flood: {results}, peak RssAnon {sampler.peak / 2**20:.1f} MiB")
    assert results["refused"] > 0, "the flood never reached the memory limit"
    assert results["ok"] > 0
    assert results["other"] == 0
    assert results["refused_without_retry_after"] == 0
    assert sampler.peak < LIMIT_MIB * 2**20
    accepted = results["ok"] * SPANS_PER_REQUEST
    assert agent.metric("otelcol_receiver_accepted_spans") == accepted
    assert agent.metric("edgeagent_queue_items", data_type="traces") == accepted  # every accepted span is queued

    def recovered() -> bool:
        outcome = asyncio.run(_flood(url, bodies[:1], 0.01))
        return outcome["ok"] > 0
    wait_until(recovered, timeout=20, interval=0.5, message="the agent accepting again")
    assert agent.health()[1]["memory_limiter"]["memory_limiter"]["refusing"] is False
    assert agent.terminate() == 0


def test_one_request_that_alone_would_cross_the_hard_limit_is_refused_even_when_nothing_is_in_flight(agents, tmp_path):
    hard_mib = 112
    agent = agents(["run", "--state-dir", str(tmp_path / "state"),
                    "--set", f"processors::memory_limiter::limit_mib={hard_mib}",
                    "--set", "processors::memory_limiter::spike_limit_mib=16",
                    "--set", "processors::memory_limiter::check_interval=100ms"])
    body = b"".join(_body(seed) for seed in range(24))  # ~14 MiB: its cost alone is more than the room left
    assert 10 << 20 < len(body) < 20 << 20
    sampler = MemorySampler(agent.process.pid)
    sampler.start()
    try:
        status = asyncio.run(_post_once(f"http://127.0.0.1:{agent.http_port}/v1/traces", body))
    finally:
        sampler.stop.set()
        sampler.join()
    print(f"one large request: {status}, peak RssAnon {sampler.peak / 2**20:.1f} MiB")
    assert status == 503
    assert sampler.peak < hard_mib << 20
    assert asyncio.run(_post_once(f"http://127.0.0.1:{agent.http_port}/v1/traces", _body(0))) == 200


async def _post_once(url: str, body: bytes) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as response:
            await response.read()
            return response.status
