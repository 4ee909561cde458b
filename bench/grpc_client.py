#!/usr/bin/env python3
"""gRPC client cost: grpcio's aio client versus edgeagent's own (exporters/grpc_client.py, asyncio + h2).

Method
    A server process (edgeagent's gRPC server, reading and discarding each message) listens on
    loopback. A client process sends --requests Export calls of a 512-span request
    (bench/ingest.py's body, the bytes the queue holds) with one of the clients; the two take
    turns, --rounds times each, interleaved (ours, grpcio, ours, ...) so both see the same
    machine load, and each in a fresh process so grpcio's threads never run beside ours. The
    client process's CPU seconds (time.process_time: every thread, grpcio's C core included) per
    request over the measured calls are recorded. The message is compressed by the client:
    grpcio inside its call, ours with `encoding.grpc_compress` as the exporter does.
    --in-flight calls run concurrently.

Usage
    python bench/grpc_client.py [--requests 400] [--rounds 5] [--in-flight 1] [--compression gzip]
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import client_cpu  # noqa: E402
from bench.ingest import build_body  # noqa: E402
from edgeagent.exporters.encoding import grpc_compress  # noqa: E402
from edgeagent.exporters.grpc_client import Channel  # noqa: E402
from edgeagent.exporters.grpc_connection import ChannelSettings  # noqa: E402

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SERVER = """
import asyncio, sys
from edgeagent.receivers import grpc_call, grpc_server
async def main():
    async def export(call):
        await call.read()
        return b""
    server = grpc_server.GrpcServer({sys.argv[1]: export}, grpc_call.Limits(max_message_bytes=64 << 20))
    print(await server.start("127.0.0.1", 0), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def ours(port: int, body: bytes, requests: int, in_flight: int, compression: str) -> float:
    channel = Channel(ChannelSettings("127.0.0.1", port))
    encoding = "" if compression == "none" else compression

    async def one() -> None:
        message = await asyncio.to_thread(grpc_compress, encoding, body) if encoding else body
        await channel.unary(METHOD, message, timeout=30, encoding=encoding)

    try:
        await one()  # connected
        return await client_cpu.timed(one, requests, in_flight)
    finally:
        await channel.close()


async def grpcio(port: int, body: bytes, requests: int, in_flight: int, compression: str) -> float:
    import grpc  # only here: the agent itself never imports it

    kind = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)

        async def one() -> None:
            await call(body, timeout=30, compression=kind)

        await one()
        return await client_cpu.timed(one, requests, in_flight)


def main() -> None:
    args = client_cpu.arguments(__doc__ or "", "grpcio")
    body = build_body(random.Random(7))
    if args.client:
        client = ours if args.client == "ours" else grpcio
        print(asyncio.run(client(args.port, body, args.requests, args.in_flight, args.compression)))
        return
    client_cpu.compare(__file__, [sys.executable, "-c", SERVER, METHOD], "grpcio", args, len(body), 2)


if __name__ == "__main__":
    main()
