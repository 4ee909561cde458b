"""What bench/grpc_client.py and bench/http_client.py share: our client's CPU per request beside a
peer client's, each client in a process of its own, in turns, against one local server."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path


async def timed(one: Callable[[], Awaitable[None]], requests: int, in_flight: int) -> float:
    """CPU seconds per request of `requests` calls of `one`, `in_flight` at a time."""
    started = time.process_time()
    for _ in range(requests // in_flight):
        await asyncio.gather(*(one() for _ in range(in_flight)))
    return (time.process_time() - started) / (requests // in_flight * in_flight)


def arguments(description: str, peer: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    parser.add_argument("--client", choices=("ours", peer), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def compare(script: str, server: list[str], peer: str, args: argparse.Namespace, body_bytes: int,
            digits: int) -> None:
    """Starts `server` (it prints its port), runs `script --client NAME` for ours and `peer` in
    turns, --rounds times, and prints min / median / max of each."""
    process = subprocess.Popen(server, stdout=subprocess.PIPE, text=True, cwd=Path(script).resolve().parent.parent)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        results: dict[str, list[float]] = {"ours": [], peer: []}
        for _ in range(args.rounds):
            for name in results:
                out = subprocess.run([sys.executable, script, "--client", name, "--port", str(port),
                                      "--requests", str(args.requests), "--in-flight", str(args.in_flight),
                                      "--compression", args.compression], capture_output=True, text=True, check=True)
                results[name].append(float(out.stdout.strip().splitlines()[-1]))
    finally:
        process.terminate()
        process.wait(10)
    print(f"{body_bytes} bytes per request (512 spans), compression {args.compression}, "
          f"{args.in_flight} in flight; client CPU ms per request, min / median / max of {args.rounds} rounds:")
    for name, values in results.items():
        ms = sorted(value * 1000 for value in values)
        print(f"  {name:8} {ms[0]:.{digits}f} / {statistics.median(ms):.{digits}f} / {ms[-1]:.{digits}f}")
