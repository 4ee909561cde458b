#!/usr/bin/env python3
"""HTTP client cost: aiohttp's client versus edgeagent's own (http1/client.py, asyncio streams).

Method
    A server process (a minimal HTTP/1.1 sink on asyncio streams: reads each request's body and
    answers 200 with an empty protobuf body) listens on loopback. A client process POSTs
    --requests times a 512-span request (bench/ingest.py's body, the bytes the queue holds),
    compressed as the otlphttp exporter compresses it (`encoding.compress`, gzip level 1) or not,
    over keep-alive connections with one of the clients; the two take turns, --rounds times each,
    interleaved, each in a fresh process. The client process's CPU seconds (time.process_time)
    per request over the measured requests are recorded, compression included.
    --in-flight requests run concurrently.

Usage
    python bench/http_client.py [--requests 400] [--rounds 5] [--in-flight 1] [--compression gzip]
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import client_cpu  # noqa: E402
from bench.ingest import build_body  # noqa: E402
from edgeagent.exporters.encoding import compress  # noqa: E402

SERVER = """
import asyncio
from edgeagent.http1 import wire
ANSWER = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/x-protobuf\\r\\nContent-Length: 0\\r\\n\\r\\n"
async def serve(reader, writer):
    try:
        while (block := await wire.read_head(reader)) is not None:
            _, headers = wire.parse_head(block)
            await reader.readexactly(int(headers["Content-Length"]))
            writer.write(ANSWER)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""
HEADERS = {"Content-Type": "application/x-protobuf", "User-Agent": "bench"}


async def ours(url: str, body: bytes, requests: int, in_flight: int, compression: str) -> float:
    from edgeagent.http1.client import ClientSettings, HttpClient

    client = HttpClient(ClientSettings())
    headers = {**HEADERS, **({"Content-Encoding": compression} if compression != "none" else {})}

    async def one() -> None:
        data = body if compression == "none" else compress(compression, body, 0)
        response = await client.request("POST", url, body=data, headers=headers.items(), timeout=30)
        assert response.status == 200

    try:
        await one()
        return await client_cpu.timed(one, requests, in_flight)
    finally:
        await client.close()


async def aiohttp_client(url: str, body: bytes, requests: int, in_flight: int, compression: str) -> float:
    import aiohttp  # only here: the agent's exporter no longer uses it

    headers = {**HEADERS, **({"Content-Encoding": compression} if compression != "none" else {})}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=30)) as session:

        async def one() -> None:
            data = body if compression == "none" else compress(compression, body, 0)
            async with session.post(url, data=data, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=30)) as response:
                await response.read()
                assert response.status == 200

        await one()
        return await client_cpu.timed(one, requests, in_flight)


def main() -> None:
    args = client_cpu.arguments(__doc__ or "", "aiohttp")
    body = build_body(random.Random(7))
    if args.client:
        client = ours if args.client == "ours" else aiohttp_client
        url = f"http://127.0.0.1:{args.port}/v1/traces"
        print(asyncio.run(client(url, body, args.requests, args.in_flight, args.compression)))
        return
    client_cpu.compare(__file__, [sys.executable, "-c", SERVER], "aiohttp", args, len(body), 3)


if __name__ == "__main__":
    main()
