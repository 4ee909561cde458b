"""edgeagent: an OpenTelemetry edge buffering agent.

OTLP in, a durable LMDB queue, OTLP out whenever the upstream is reachable.
"""

__version__ = "0.1.0"
