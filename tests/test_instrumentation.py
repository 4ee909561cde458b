"""The request-duration metrics of the OTLP servers, against a real server and raw sockets."""

from __future__ import annotations

import asyncio

from edgeagent.extensions.metrics import Metrics
from edgeagent.http1.server import Request, Response, Server
from edgeagent.instrumentation import http_server_timer


async def _ok(request: Request) -> Response:
    return Response(200, text="ok")


def test_arbitrary_request_methods_do_not_grow_the_duration_series_without_bound():
    """A client may send any token as a method: each one became a series of its own (15 buckets
    each, kept for ever), so a hostile client grew the agent's memory and /metrics without bound.
    otelhttp serves methods outside the standard set as `_OTHER`."""
    async def run() -> Metrics:
        metrics = Metrics()
        server = Server(middlewares=[http_server_timer(metrics, "127.0.0.1", 4318, "http")])
        server.post("/v1/traces", _ok)
        port = await server.listen(host="127.0.0.1", port=0)
        try:
            for index in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"M%d /v1/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % index)
                await reader.read()
                writer.close()
        finally:
            await server.stop(1.0)
        return metrics

    metrics = asyncio.run(run())
    methods = {labels[0] for labels in metrics.histograms["http_server_request_duration"].values}
    assert methods == {"_OTHER"}
