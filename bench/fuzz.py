#!/usr/bin/env python3
"""Fuzzing a real edgeagent process over OTLP/HTTP and OTLP/gRPC: crashes, 5xx answers, peak memory.

Method
    One agent is started with its embedded config (memory_limiter 512 MiB, 20 MiB body limit),
    its queue in a temporary directory and an upstream that refuses connections, so everything
    accepted is stored. A seeded generator builds each input from a base (valid OTLP protobuf,
    valid OTLP/JSON, random bytes, random or deeply nested JSON, a decompression bomb), compresses
    one to three parts with an encoding otelcol sends (or an unknown one), joins them, and may
    damage the result (truncate, flip a byte, pad before or after). A quarter of the inputs go
    over gRPC (grpcio client: none, gzip or deflate; the message is the uncompressed input), the
    rest over HTTP with a random Content-Type and signal path, over --connections keep-alive
    connections.

    Reported: inputs sent, answers by status, every 5xx and every gRPC INTERNAL/UNKNOWN (with
    the first samples), agent crashes (the agent is restarted after one), and the agent's peak
    RssAnon sampled every 20 ms. Malformed input must get a 4xx (INVALID_ARGUMENT or
    RESOURCE_EXHAUSTED over gRPC); 503 is allowed only as the memory limiter's refusal.

Usage
    python bench/fuzz.py [--count 1000000] [--seed 1] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ingest  # noqa: E402  (process helpers)

from tests.helpers.hostile import ENCODERS, spans_json, spans_request  # noqa: E402
from tests.helpers.net import free_port  # noqa: E402

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PATHS = ["/v1/traces", "/v1/metrics", "/v1/logs"]
CONTENT_TYPES = ["application/x-protobuf"] * 9 + ["application/json"] * 8 + ["text/plain", ""]
UNKNOWN_ENCODINGS = ["br", "compress", "gzip, zstd"]
GRPC_COMPRESSION = [grpc.Compression.NoCompression, grpc.Compression.Gzip, grpc.Compression.Deflate]
GRPC_CLIENT_ERRORS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                      grpc.StatusCode.UNAVAILABLE}


class Inputs:
    """Seeded hostile inputs; bases are built once so generating stays cheaper than sending."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.valid = [spans_request(count) for count in (0, 1, 10, 100, 1000)]
        self.json = [spans_json(count) for count in (1, 10, 100)]
        self.deep = [b"[" * 200_000 + b"]" * 200_000, b'{"resourceSpans":' + b"[" * 5000 + b"]" * 5000 + b"}"]
        self.bomb = bytes(64 << 20)

    def base(self) -> bytes:
        rng = self.rng
        kind = rng.random()
        if kind < 0.35:
            return rng.choice(self.valid)
        if kind < 0.55:
            return rng.choice(self.json)
        if kind < 0.8:
            return rng.randbytes(rng.choice((0, 1, 16, 300, 4000)))
        if kind < 0.95:
            return json.dumps(self._json_value(3)).encode()
        return rng.choice(self.deep)

    def _json_value(self, depth: int):
        rng = self.rng
        if depth == 0 or rng.random() < 0.3:
            return rng.choice([None, True, 7, -1.5, "x", "5b8efff798038103d269b633813fc60c", ""])
        if rng.random() < 0.5:
            return [self._json_value(depth - 1) for _ in range(rng.randrange(3))]
        keys = ["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "name", "attributes", "value"]
        return {rng.choice(keys): self._json_value(depth - 1) for _ in range(rng.randrange(3))}

    def http(self) -> tuple[str, dict[str, str], bytes]:
        rng = self.rng
        if rng.random() < 0.002:  # a bomb now and then: 64 MiB of zeros in a few KiB
            encoding = rng.choice(["gzip", "zstd", "lz4", "x-snappy-framed"])
            return "/v1/traces", {"Content-Type": "application/x-protobuf", "Content-Encoding": encoding}, \
                ENCODERS[encoding](self.bomb)
        encoding = rng.choice(list(ENCODERS) * 5 + UNKNOWN_ENCODINGS)
        encode = ENCODERS.get(encoding, ENCODERS["gzip"])
        body = b"".join(encode(self.base()) for _ in range(rng.choice((1, 1, 2, 3))))
        headers = {"Content-Type": rng.choice(CONTENT_TYPES), "Content-Encoding": encoding}
        return rng.choice(PATHS), headers, self.damage(body)

    def grpc(self) -> tuple[bytes, grpc.Compression]:
        return self.damage(self.base()), self.rng.choice(GRPC_COMPRESSION)

    def damage(self, body: bytes) -> bytes:
        rng = self.rng
        kind = rng.random()
        if kind < 0.6 or not body:
            return body
        if kind < 0.75:
            return body[:rng.randrange(len(body))]
        if kind < 0.9:
            index = rng.randrange(len(body))
            return body[:index] + bytes([body[index] ^ rng.randrange(1, 256)]) + body[index + 1:]
        return rng.randbytes(rng.randrange(1, 20)) + body if kind < 0.95 else body + rng.randbytes(8)


class Agent:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.http_port, self.grpc_port, self.health_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.crashes = 0
        self.peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def start(self) -> None:
        log = self.workdir / "agent.log"
        cmd = [sys.executable, "-m", "edgeagent", "run", "--state-dir", str(self.workdir / "state"),
               "--upstream", f"http://127.0.0.1:{free_port()}",
               "--set", f"receivers::otlp::protocols::http::endpoint=127.0.0.1:{self.http_port}",
               "--set", f"receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{self.grpc_port}",
               "--set", f"extensions::health_check::endpoint=127.0.0.1:{self.health_port}",
               "--set", "service::telemetry::metrics::readers=[{pull: {exporter: {prometheus: "
                       f"{{host: 127.0.0.1, port: {free_port()}}}}}}}}}]"]
        self.process = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while ingest.health_status(self.health_port) != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start:\n{ingest.tail(log)}")
            time.sleep(0.1)

    def check(self) -> None:
        """Restart the agent if it died, counting a crash."""
        if self.process is not None and self.process.poll() is not None:
            self.crashes += 1
            print(f"CRASH: agent exited with {self.process.returncode}:\n{ingest.tail(self.workdir / 'agent.log')}")
            self.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            if self.process is not None:
                self.peak = max(self.peak, ingest.rss_anon_bytes(self.process.pid))

    def stop(self) -> None:
        self._stop.set()
        if self.process is not None:
            ingest.stop(self.process)


class Tally:
    def __init__(self):
        self.answers: collections.Counter[str] = collections.Counter()
        self.bad = 0  # 5xx, INTERNAL, UNKNOWN, transport errors
        self.samples: list[str] = []  # the first few of them

    def record(self, outcome: str, sample: str, bad: bool) -> None:
        self.answers[outcome] += 1
        if bad:
            self.bad += 1
            if len(self.samples) < 10:
                self.samples.append(f"{outcome}: {sample}")


async def send_http(session: aiohttp.ClientSession, agent: Agent, inputs: Inputs, tally: Tally) -> None:
    path, headers, body = inputs.http()
    try:
        async with session.post(f"http://127.0.0.1:{agent.http_port}{path}", data=body, headers=headers) as response:
            text = await response.read()
            retry = response.status == 503 and "Retry-After" in response.headers
            tally.record(f"http {response.status}", f"{headers} {body[:40]!r} -> {text[:120]!r}",
                         response.status >= 500 and not retry)
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.record("http transport error", f"{type(exc).__name__} {headers} {body[:40]!r}", True)


async def send_grpc(channel: grpc.aio.Channel, inputs: Inputs, tally: Tally) -> None:
    message, compression = inputs.grpc()
    try:
        await channel.unary_unary(TRACE_METHOD)(message, timeout=30, compression=compression)
        code, detail = grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as error:
        code, detail = error.code(), error.details() or ""
    tally.record(
        f"grpc {code.name}", f"{compression} {message[:40]!r} -> {detail[:120]}", code not in GRPC_CLIENT_ERRORS
    )


async def run(agent: Agent, count: int, connections: int, seed: int) -> Tally:
    inputs, tally = Inputs(seed), Tally()
    remaining = iter(range(count))
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session, \
            grpc.aio.insecure_channel(f"127.0.0.1:{agent.grpc_port}") as channel:
        async def worker() -> None:
            for index in remaining:
                if index % 1000 == 0:
                    agent.check()
                if inputs.rng.random() < 0.25:
                    await send_grpc(channel, inputs, tally)
                else:
                    await send_http(session, agent, inputs, tally)
        await asyncio.gather(*(worker() for _ in range(connections)))
    agent.check()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to send (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent requests (default 16)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeagent-fuzz-") as workdir:
        agent = Agent(Path(workdir))
        agent.start()
        began = time.monotonic()
        try:
            tally = asyncio.run(run(agent, args.count, args.connections, args.seed))
        finally:
            agent.stop()
        seconds = time.monotonic() - began
    print(f"inputs {args.count} in {seconds:.1f} s ({args.count / seconds:.0f}/s), seed {args.seed}")
    for outcome, number in sorted(tally.answers.items()):
        print(f"  {outcome:32s} {number}")
    print(f"crashes {agent.crashes}")
    print(f"5xx and gRPC INTERNAL/UNKNOWN/transport errors {tally.bad}")
    for sample in tally.samples:
        print(f"  {sample}")
    print(f"peak RssAnon of the agent {agent.peak / 2**20:.1f} MiB")
    return 1 if agent.crashes or tally.bad else 0


if __name__ == "__main__":
    sys.exit(main())
