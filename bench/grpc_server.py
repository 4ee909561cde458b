#!/usr/bin/env python3
"""gRPC server cost: grpcio's server versus edgeagent's own (receivers/grpc_server.py, asyncio + h2).

Method
    Each server runs alone in a child process with one unary method, the OTLP trace Export,
    whose handler takes the message and, with --parse, parses it as an
    ExportTraceServiceRequest (the agent's own work per request is the same for both servers and
    is left out). A grpc.aio client in this process sends 512-span requests (bench/ingest.py's
    bodies) over one channel with N calls in flight (N concurrent HTTP/2 streams), for a warm-up
    and then --requests measured calls. The server process's CPU time (user + system) over the
    measured calls, divided by their number, is "CPU ms/req"; requests/s is wall-clock.
    Both servers are measured in the same run, for each N; the ratio is ours / grpcio's.

    python bench/grpc_server.py                    # N = 4 and 16, 2000 calls each
    python bench/grpc_server.py --parse --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def serve(kind: str, parse: bool) -> None:
    """The child: serve on a free port, print it, run until stdin closes."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    def work(message: bytes) -> None:
        if parse:
            ExportTraceServiceRequest.FromString(message)

    async def main() -> None:
        if kind == "grpcio":
            server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 << 20)])

            async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                work(request)
                return b""

            handler = grpc.unary_unary_rpc_method_handler(export)
            service, _, method = METHOD[1:].partition("/")
            server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {method: handler})])
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
        else:
            from edgeagent.receivers import grpc_call, grpc_server

            async def ours(call: grpc_call.GrpcCall) -> bytes:
                work(await call.read())
                return b""

            server = grpc_server.GrpcServer({METHOD: ours}, grpc_call.Limits(max_message_bytes=4 << 20))
            port = await server.start("127.0.0.1", 0)
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


async def load(port: int, bodies: list[bytes], streams: int, requests: int) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        counter = iter(range(requests))

        async def worker() -> None:
            for index in counter:
                await call(bodies[index % len(bodies)], timeout=30)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
        return time.perf_counter() - started


def measure(kind: str, bodies: list[bytes], streams: int, requests: int, parse: bool) -> tuple[float, float]:
    """(server CPU ms per request, requests per second)."""
    child = subprocess.Popen([sys.executable, __file__, "--serve", kind] + (["--parse"] if parse else []),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        process = psutil.Process(child.pid)
        asyncio.run(load(port, bodies, streams, max(100, requests // 10)))  # warm-up
        before = process.cpu_times()
        wall = asyncio.run(load(port, bodies, streams, requests))
        after = process.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        return cpu * 1000 / requests, requests / wall
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=["grpcio", "h2"], help=argparse.SUPPRESS)
    parser.add_argument("--parse", action="store_true", help="handlers parse the request")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--streams", type=int, nargs="+", default=[4, 16])
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.parse)
        return 0
    from ingest import build_body

    rng = random.Random(7)
    bodies = [build_body(rng) for _ in range(4)]
    print(f"512-span requests of ~{sum(map(len, bodies)) // len(bodies) // 1024} KiB, {args.requests} calls, "
          f"handler {'parses' if args.parse else 'takes the bytes'}")
    print(f"{'streams':>7} {'server':>8} {'CPU ms/req':>11} {'req/s':>8} {'CPU ratio h2/grpcio':>20}")
    for streams in args.streams:
        results = {kind: measure(kind, bodies, streams, args.requests, args.parse) for kind in ("grpcio", "h2")}
        for kind, (cpu, rate) in results.items():
            ratio = f"{results['h2'][0] / results['grpcio'][0]:.2f}x" if kind == "h2" else ""
            print(f"{streams:>7} {kind:>8} {cpu:>11.3f} {rate:>8.0f} {ratio:>20}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
