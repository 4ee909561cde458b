"""edgeagent's own HTTP/1.1, server and client, on asyncio streams: what the OTLP/HTTP receiver,
the health check, the metrics endpoint, the control socket and the OTLP/HTTP exporter speak."""
