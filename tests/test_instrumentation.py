"""Request durations of the OTLP servers, labelled with how each request ended."""

from __future__ import annotations

import asyncio

import grpc

from edgeagent.extensions.metrics import Metrics
from edgeagent.instrumentation import rpc_server_timer


def test_a_grpc_call_the_server_aborts_is_timed_with_its_status_not_as_ok():
    async def run() -> Metrics:
        metrics = Metrics()

        async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
            return b""

        async def accept(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return b""

        server = grpc.aio.server()
        methods = {name: grpc.unary_unary_rpc_method_handler(rpc_server_timer(metrics, f"svc/{name}", handler))
                   for name, handler in (("Refuse", refuse), ("Accept", accept))}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("svc", methods)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await channel.unary_unary("/svc/Accept")(b"", timeout=10)
                try:
                    await channel.unary_unary("/svc/Refuse")(b"", timeout=10)
                except grpc.aio.AioRpcError as error:
                    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await server.stop(0)
        return metrics

    histogram = asyncio.run(run()).histograms["rpc_server_call_duration"]
    assert set(histogram.values) == {("svc/Accept", "OK", "grpc"), ("svc/Refuse", "RESOURCE_EXHAUSTED", "grpc")}
