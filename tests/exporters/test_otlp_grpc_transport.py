"""Which transport the `otlp` exporter opens for its endpoint, as otelcol's configgrpc decides it."""

from __future__ import annotations

import asyncio

from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from tests.helpers.net import free_port


def test_https_endpoint_with_tls_insecure_starts_with_tls_instead_of_crashing():
    # otelcol: `insecure: true` leaves no TLS settings, and an https:// scheme then means TLS with the system roots
    config = OtlpGrpcConfig.model_validate({"endpoint": f"https://127.0.0.1:{free_port()}",
                                            "tls": {"insecure": True}})

    async def start_and_stop() -> None:
        exporter = OtlpGrpcExporter("otlp", config)
        try:
            await exporter.start()
        finally:
            await exporter.shutdown()

    asyncio.run(start_and_stop())
