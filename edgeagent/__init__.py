"""edgeagent: an OpenTelemetry edge buffering agent.

OTLP in, a durable LMDB queue, OTLP out whenever the upstream is reachable.
"""

__version__ = "0.1.0"

from edgeagent.lean import no_pydantic_plugins  # noqa: E402  (after the version: nothing it imports needs it)

no_pydantic_plugins()  # before any model is built: see edgeagent/lean.py
